"""Amazon Bedrock Converse usage.

Converse ``usage.inputTokens`` EXCLUDES ``cacheReadInputTokens`` and
``cacheWriteInputTokens`` (``totalTokens`` = input + output + read + write);
we add them back.  The response names no model: the model id comes from the
URL (``/model/{id}/converse``).

ConverseStream uses AWS event-stream framing, not SSE; once unframed, its
``metadata`` event payload (``{"usage": ..., "metrics": ...}``) can be fed to
this reader with ``feed_json`` like a whole body.
"""

from __future__ import annotations

from typing import Any

from lumen_agent.parsers.providers.base import BaseReader, plus
from lumen_agent.parsers.usage import Usage


def _first(obj: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if obj.get(key) is not None:
            return obj[key]
    return None


class ConverseReader(BaseReader):
    __slots__ = ()

    def _take(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        metadata = obj.get("metadata")  # ConverseStream event as SDKs show it
        usage = (metadata if isinstance(metadata, dict) else obj).get("usage")
        if not isinstance(usage, dict):
            return
        self._note("input", usage.get("inputTokens"))
        self._note("output", usage.get("outputTokens"))
        self._note("cache_read", _first(usage, "cacheReadInputTokens", "cacheReadInputTokenCount"))
        self._note(
            "cache_write", _first(usage, "cacheWriteInputTokens", "cacheWriteInputTokenCount")
        )

    def result(self) -> Usage:
        read, write = self._get("cache_read"), self._get("cache_write")
        return self._usage(
            input_tokens=plus(self._get("input"), read, write),
            output_tokens=self._get("output"),
            cache_read_tokens=read,
            cache_write_tokens=write,
        )
