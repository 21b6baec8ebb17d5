"""Provider recognition and usage readers, one module per API family.

``identify`` says which LLM API a request calls (or None); ``usage_reader``
gives the reader that turns that API's response into a normalised ``Usage``.
"""

from __future__ import annotations

from lumen_agent.parsers.providers.anthropic import MessagesReader
from lumen_agent.parsers.providers.base import NoUsageReader, RequestInfo, UsageError, UsageReader
from lumen_agent.parsers.providers.batch import (
    ANTHROPIC_BATCH_ENDPOINTS,
    OPENAI_BATCH_ENDPOINTS,
    BatchResultsReader,
)
from lumen_agent.parsers.providers.bedrock import ConverseReader, InvokeReader
from lumen_agent.parsers.providers.google import GeminiReader
from lumen_agent.parsers.providers.ollama import OllamaReader
from lumen_agent.parsers.providers.openai import ChatCompletionsReader, EmbeddingsReader, ResponsesReader
from lumen_agent.parsers.providers.recognise import identify
from lumen_agent.parsers.providers.served_by import served_by

__all__ = ["RequestInfo", "UsageError", "UsageReader", "identify", "served_by", "usage_reader"]


def usage_reader(info: RequestInfo) -> UsageReader:
    """A fresh reader for the response to the request ``info`` describes."""
    endpoint = info.endpoint
    if endpoint in OPENAI_BATCH_ENDPOINTS:
        return BatchResultsReader("openai", info.batch_ref)
    if endpoint in ANTHROPIC_BATCH_ENDPOINTS:
        return BatchResultsReader("anthropic", info.batch_ref)
    if endpoint in ("chat.completions", "completions"):
        return ChatCompletionsReader(request_model=info.request_model, search_context_size=info.search_context_size)
    if endpoint == "responses":
        return ResponsesReader()
    if endpoint == "embeddings":
        return EmbeddingsReader()
    if endpoint == "messages":
        return MessagesReader()
    if endpoint in ("generateContent", "streamGenerateContent"):
        return GeminiReader(fallback_model=info.request_model)
    if endpoint in ("converse", "converse-stream"):
        return ConverseReader(fallback_model=info.request_model)
    if endpoint in ("invoke", "invoke-with-response-stream"):
        # InvokeModel returns the model vendor's own body (Anthropic's is
        # read), and Bedrock's counts in headers and invocation metrics.
        return InvokeReader(fallback_model=info.request_model)
    if endpoint in ("chat", "generate", "embed"):
        return OllamaReader(embedding=endpoint == "embed")
    return NoUsageReader()
