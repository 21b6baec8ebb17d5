"""identify(): path and body shape first, host name second."""

from __future__ import annotations

import pytest

from lumen_agent.parsers.providers import RequestInfo, identify
from lumen_agent.parsers.providers.recognise import provider_of_host

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": []}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
CONVERSE = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}

CASES = [
    # OpenAI and its endpoints
    ("api.openai.com", "/v1/chat/completions", CHAT, {},
     RequestInfo("openai", "chat.completions", "gpt-4o", False, None)),
    ("api.openai.com", "/v1/chat/completions", dict(CHAT, stream=True), {},
     RequestInfo("openai", "chat.completions", "gpt-4o", True, False)),
    ("api.openai.com", "/v1/chat/completions",
     dict(CHAT, stream=True, stream_options={"include_usage": True}), {},
     RequestInfo("openai", "chat.completions", "gpt-4o", True, True)),
    ("api.openai.com", "/v1/responses", {"model": "gpt-5", "input": "hi", "stream": True}, {},
     RequestInfo("openai", "responses", "gpt-5", True, None)),
    ("api.openai.com", "/v1/embeddings", {"model": "text-embedding-3-large", "input": ["a"]}, {},
     RequestInfo("openai", "embeddings", "text-embedding-3-large", False, None)),
    ("api.openai.com", "/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "x"}, {},
     RequestInfo("openai", "completions", "gpt-3.5-turbo-instruct", False, None)),
    ("api.openai.com:443", "/v1/chat/completions/", CHAT, {},
     RequestInfo("openai", "chat.completions", "gpt-4o", False, None)),
    # body unparseable or truncated: the path alone decides
    ("api.openai.com", "/v1/chat/completions", None, {},
     RequestInfo("openai", "chat.completions", None, False, None)),
    # Azure: by host, or by /openai/deployments/NAME/ path behind any gateway
    ("myres.openai.azure.com", "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21",
     {"messages": []}, {}, RequestInfo("azure", "chat.completions", "gpt4o-prod", False, None)),
    ("myres.openai.azure.com", "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21",
     dict(CHAT, stream=True), {}, RequestInfo("azure", "chat.completions", "gpt-4o", True, False)),
    ("apim.corp.example", "/azure/openai/deployments/emb%20small/embeddings?api-version=2024-02-01",
     {"input": "x"}, {}, RequestInfo("azure", "embeddings", "emb small", False, None)),
    ("myres.openai.azure.com", "/openai/v1/responses", {"model": "gpt-5-mini", "input": "x"}, {},
     RequestInfo("azure", "responses", "gpt-5-mini", False, None)),
    ("myres.cognitiveservices.azure.com", "/openai/deployments/o3/chat/completions", {"messages": []}, {},
     RequestInfo("azure", "chat.completions", "o3", False, None)),
    # OpenAI-compatible providers, by host, with their own prefixes
    ("api.mistral.ai", "/v1/chat/completions", {"model": "mistral-large-latest", "messages": []}, {},
     RequestInfo("mistral", "chat.completions", "mistral-large-latest", False, None)),
    ("api.deepseek.com", "/chat/completions", {"model": "deepseek-chat", "messages": []}, {},
     RequestInfo("deepseek", "chat.completions", "deepseek-chat", False, None)),
    ("api.x.ai", "/v1/chat/completions", {"model": "grok-4", "messages": []}, {},
     RequestInfo("xai", "chat.completions", "grok-4", False, None)),
    ("api.groq.com", "/openai/v1/chat/completions", {"model": "llama-3.3-70b-versatile", "messages": []}, {},
     RequestInfo("groq", "chat.completions", "llama-3.3-70b-versatile", False, None)),
    ("openrouter.ai", "/api/v1/chat/completions", {"model": "openai/gpt-5-mini", "messages": []}, {},
     RequestInfo("openrouter", "chat.completions", "openai/gpt-5-mini", False, None)),
    ("generativelanguage.googleapis.com", "/v1beta/openai/chat/completions",
     {"model": "gemini-2.5-flash", "messages": []}, {},
     RequestInfo("google", "chat.completions", "gemini-2.5-flash", False, None)),
    # unknown hosts speaking the OpenAI shape: gateways, vLLM, LiteLLM
    ("localhost:4000", "/proxy/openai/v1/chat/completions", CHAT, {},
     RequestInfo("openai-compatible", "chat.completions", "gpt-4o", False, None)),
    ("10.0.0.5:8000", "/v1/chat/completions", {"model": "Qwen/Qwen3-8B", "messages": []}, {},
     RequestInfo("openai-compatible", "chat.completions", "Qwen/Qwen3-8B", False, None)),
    ("gw.example.com", "//v1//embeddings", {"model": "bge-m3", "input": "x"}, {},
     RequestInfo("openai-compatible", "embeddings", "bge-m3", False, None)),
    # Anthropic, on its host or any host
    ("api.anthropic.com", "/v1/messages?beta=true", dict(ANTHROPIC, stream=True), {},
     RequestInfo("anthropic", "messages", "claude-sonnet-4-5", True, None)),
    ("llm-gw.corp:8443", "/anthropic/v1/messages", {"model": "claude-haiku-4-5", "messages": []},
     {"anthropic-version": "2023-06-01"},
     RequestInfo("anthropic", "messages", "claude-haiku-4-5", False, None)),
    ("127.0.0.1:9000", "/v1/messages", ANTHROPIC, {},
     RequestInfo("anthropic", "messages", "claude-sonnet-4-5", False, None)),
    ("api.deepseek.com", "/anthropic/v1/messages", dict(ANTHROPIC, model="deepseek-chat"),
     {"anthropic-version": "2023-06-01"},
     RequestInfo("deepseek", "messages", "deepseek-chat", False, None)),
    # Gemini API and Vertex AI
    ("generativelanguage.googleapis.com", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
     GEMINI, {}, RequestInfo("google", "streamGenerateContent", "gemini-2.5-flash", True, None)),
    ("generativelanguage.googleapis.com", "/v1beta/models/gemini-2.5-pro:generateContent", GEMINI, {},
     RequestInfo("google", "generateContent", "gemini-2.5-pro", False, None)),
    ("us-central1-aiplatform.googleapis.com",
     "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:generateContent",
     GEMINI, {}, RequestInfo("google", "generateContent", "gemini-2.0-flash-001", False, None)),
    ("gemini-proxy.internal", "/google/v1beta/models/gemini-2.5-flash:generateContent", GEMINI, {},
     RequestInfo("google", "generateContent", "gemini-2.5-flash", False, None)),
    ("us-east5-aiplatform.googleapis.com",
     "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict",
     {"anthropic_version": "vertex-2023-10-16", "max_tokens": 100, "messages": [], "stream": True}, {},
     RequestInfo("google", "messages", "claude-sonnet-4@20250514", True, None)),
    # Bedrock
    ("bedrock-runtime.us-east-1.amazonaws.com",
     "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse", CONVERSE, {},
     RequestInfo("bedrock", "converse", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", False, None)),
    ("bedrock-runtime.eu-west-1.amazonaws.com", "/model/amazon.nova-pro-v1%3A0/converse-stream", CONVERSE, {},
     RequestInfo("bedrock", "converse-stream", "amazon.nova-pro-v1:0", True, None)),
    ("bedrock-runtime.us-west-2.amazonaws.com", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
     {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": []}, {},
     RequestInfo("bedrock", "invoke", "anthropic.claude-3-haiku-20240307-v1:0", False, None)),
    # Ollama: port 11434, or the /api/chat and /api/generate shapes anywhere
    ("localhost:11434", "/api/chat", {"model": "llama3.2", "messages": []}, {},
     RequestInfo("ollama", "chat", "llama3.2", True, None)),
    ("localhost:11434", "/api/chat", {"model": "llama3.2", "messages": [], "stream": False}, {},
     RequestInfo("ollama", "chat", "llama3.2", False, None)),
    ("gpu-box:8080", "/api/generate", {"model": "qwen3", "prompt": "hi", "stream": False}, {},
     RequestInfo("ollama", "generate", "qwen3", False, None)),
    ("[::1]:11434", "/api/embed", {"model": "all-minilm", "input": "x"}, {},
     RequestInfo("ollama", "embed", "all-minilm", False, None)),
    ("127.0.0.1:11434", "/v1/chat/completions", {"model": "llama3.2", "messages": []}, {},
     RequestInfo("ollama", "chat.completions", "llama3.2", False, None)),
    ("127.0.0.1:11434", "/api/generate", None, {},
     RequestInfo("ollama", "generate", None, True, None)),
]


@pytest.mark.parametrize(("host", "path", "body", "headers", "expected"), CASES)
def test_identify(host, path, body, headers, expected):
    assert identify("POST", path, host, headers, body) == expected


NOT_LLM_CALLS = [
    ("GET", "api.openai.com", "/v1/chat/completions", CHAT, {}),
    ("GET", "api.openai.com", "/v1/models", None, {}),
    ("POST", "api.openai.com", "/v1/models", None, {}),
    ("POST", "api.openai.com", "/v1/files", None, {}),
    ("POST", "example.com", "/", {"a": 1}, {}),
    ("POST", "example.com", "/upload", None, {}),
    # the right path but not the body shape
    ("POST", "example.com", "/v1/chat/completions", {"query": "x"}, {}),
    ("POST", "example.com", "/v1/chat/completions", ["not", "an", "object"], {}),
    # OpenAI Assistants messages are not Anthropic Messages
    ("POST", "api.openai.com", "/v1/threads/thread_1/messages", {"role": "user", "content": "x"}, {}),
    ("POST", "api.anthropic.com", "/v1/messages/count_tokens", ANTHROPIC, {}),
    ("POST", "api.anthropic.com", "/v1/messages/batches", {"requests": []}, {}),
    # a web app's own /api/chat (no model) is not Ollama
    ("POST", "myapp.example.com", "/api/chat", {"messages": [{"role": "user", "content": "x"}]}, {}),
    ("POST", "myapp.example.com", "/api/generate", None, {}),
    ("POST", "generativelanguage.googleapis.com", "/v1beta/models/gemini-2.5-flash:countTokens", GEMINI, {}),
    ("POST", "example.com", "/model/x/invoke", {"inputText": "x"}, {}),
]


@pytest.mark.parametrize(("method", "host", "path", "body", "headers"), NOT_LLM_CALLS)
def test_not_an_llm_call(method, host, path, body, headers):
    assert identify(method, path, host, headers, body) is None


def test_host_from_headers_and_absolute_target():
    assert identify("POST", "/v1/messages", None, {":authority": "api.anthropic.com"}, ANTHROPIC).provider == "anthropic"
    assert identify("POST", "/v1/chat/completions", None, {"host": "api.groq.com"}, CHAT).provider == "groq"
    info = identify("POST", "http://api.openai.com/v1/chat/completions", None, {}, CHAT)
    assert info == RequestInfo("openai", "chat.completions", "gpt-4o", False, None)
    assert identify("POST", "/v1/chat/completions", "API.OpenAI.com.", {}, CHAT).provider == "openai"


def test_truncated_body_with_only_the_model():
    # The pipeline recovers model/stream/include_usage from a body cut at its limit.
    partial = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}}
    assert identify("POST", "/v1/chat/completions", "api.openai.com", {}, partial) == RequestInfo(
        "openai", "chat.completions", "gpt-4o", True, True
    )
    info = identify("POST", "/v1/messages", "api.anthropic.com", {"anthropic-version": "2023-06-01"},
                    {"model": "claude-opus-4-1", "stream": True})
    assert info == RequestInfo("anthropic", "messages", "claude-opus-4-1", True, None)


@pytest.mark.parametrize(("authority", "provider"), [
    ("api.openai.com", "openai"),
    ("api.openai.com:443", "openai"),
    ("eu.api.openai.com", "openai"),
    ("x.openai.azure.com", "azure"),
    ("bedrock-runtime.us-east-1.amazonaws.com", "bedrock"),
    ("bedrock-runtime-fips.us-gov-west-1.amazonaws.com", "bedrock"),
    ("s3.amazonaws.com", None),
    ("europe-west4-aiplatform.googleapis.com", "google"),
    ("localhost:11434", "ollama"),
    ("localhost:8080", None),
    ("notopenai.com", None),
    ("api.openai.com.evil.example", None),
    (None, None),
])
def test_provider_of_host(authority, provider):
    assert provider_of_host(authority) == provider
