"""Gemini ``generateContent`` / ``streamGenerateContent`` usage (Gemini API
and Vertex AI).

``usageMetadata.promptTokenCount`` INCLUDES ``cachedContentTokenCount``;
``thoughtsTokenCount`` is SEPARATE from ``candidatesTokenCount``, so output =
candidates + thoughts.  ``toolUsePromptTokenCount`` (e.g. search results fed
back to the model) is also outside ``promptTokenCount`` and billed as input,
so it is added to input.  Every stream chunk carries cumulative usage: the
latest wins.  The JSON mapping of the protobuf omits zero counts, so a
missing candidates or thoughts count next to a reported prompt means zero.

The model comes from ``modelVersion``, else from the URL (``models/NAME:...``).
"""

from __future__ import annotations

from typing import Any

from lumen_agent.parsers.providers.base import BaseReader, plus
from lumen_agent.parsers.usage import Usage


class GeminiReader(BaseReader):
    __slots__ = ()

    def _take(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self._note_identity(obj.get("modelVersion"), obj.get("responseId"))
        usage = obj.get("usageMetadata")
        if not isinstance(usage, dict):
            return
        self._note("prompt", usage.get("promptTokenCount"))
        self._note("cached", usage.get("cachedContentTokenCount"))
        self._note("candidates", usage.get("candidatesTokenCount"))
        self._note("thoughts", usage.get("thoughtsTokenCount"))
        self._note("tool_prompt", usage.get("toolUsePromptTokenCount"))

    def result(self) -> Usage:
        prompt = self._get("prompt")
        candidates, thoughts = self._get("candidates"), self._get("thoughts")
        if candidates is None and thoughts is None:
            output = None if prompt is None else 0
        else:
            output = (candidates or 0) + (thoughts or 0)
        return self._usage(
            input_tokens=plus(prompt, self._get("tool_prompt")),
            output_tokens=output,
            cache_read_tokens=self._get("cached"),
            reasoning_tokens=thoughts,
        )
