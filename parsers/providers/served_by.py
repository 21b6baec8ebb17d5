"""Which provider served a call, from its response headers.

A call to an internal gateway or a base-URL override has a host name that
names no provider; the response headers often still do, because the
provider's own headers pass through.  ``served_by`` names the provider they
show, or None.  Azure is checked before OpenAI: Azure OpenAI answers with
OpenAI's body shape but its own headers.
"""

from __future__ import annotations

from collections.abc import Iterable

# (provider, exact header names, header name prefixes), checked in order.
_SIGNS: tuple[tuple[str, frozenset[str], tuple[str, ...]], ...] = (
    ("azure", frozenset({"apim-request-id", "azureml-model-session", "x-ms-region", "x-ms-deployment-name"}), ()),
    ("bedrock", frozenset(), ("x-amzn-bedrock-",)),
    ("anthropic", frozenset({"anthropic-organization-id"}), ("anthropic-ratelimit-",)),
    ("openai", frozenset({"openai-organization", "openai-version", "openai-processing-ms", "openai-project"}), ()),
    ("google", frozenset(), ("x-goog-", "x-gemini-")),
    ("groq", frozenset({"x-groq-region"}), ()),
    ("openrouter", frozenset(), ("x-openrouter-",)),
)


def served_by(header_names: Iterable[str]) -> str | None:
    """The provider whose headers a response carries (names lowercase), or None."""
    names = {name for name in header_names if isinstance(name, str)}
    if not names:
        return None
    for provider, exact, prefixes in _SIGNS:
        if names & exact:
            return provider
        if prefixes and any(name.startswith(prefixes) for name in names):
            return provider
    return None
