"""Anthropic Messages usage (api.anthropic.com, and the same body shape from
Bedrock InvokeModel, Vertex rawPredict and Anthropic-compatible servers).

Anthropic's ``input_tokens`` EXCLUDE ``cache_read_input_tokens`` and
``cache_creation_input_tokens``; we add them back so ``input_tokens`` counts
the whole prompt.  ``cache_creation.ephemeral_5m_input_tokens`` and
``ephemeral_1h_input_tokens`` split the writes by cache lifetime.  Thinking
tokens are part of ``output_tokens`` and not reported apart.

Streaming: ``message_start.message.usage`` has the input and cache counts
(and a provisional ``output_tokens``); ``message_delta.usage`` has the
cumulative final ``output_tokens`` and may repeat the input fields.  The
latest reported value of each field wins.
"""

from __future__ import annotations

from typing import Any

from lumen_agent.parsers.providers.base import BaseReader, plus
from lumen_agent.parsers.usage import Usage


class MessagesReader(BaseReader):
    __slots__ = ()

    def _take(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        message = obj.get("message")  # message_start wraps the message
        if not isinstance(message, dict):
            message = obj  # non-streaming body, or message_delta
        self._note_identity(message.get("model"), message.get("id"))
        usage = message.get("usage")
        if not isinstance(usage, dict):
            return
        self._note("input", usage.get("input_tokens"))
        self._note("output", usage.get("output_tokens"))
        self._note("cache_read", usage.get("cache_read_input_tokens"))
        self._note("cache_write", usage.get("cache_creation_input_tokens"))
        creation = usage.get("cache_creation")
        if isinstance(creation, dict):
            self._note("write_5m", creation.get("ephemeral_5m_input_tokens"))
            self._note("write_1h", creation.get("ephemeral_1h_input_tokens"))

    def result(self) -> Usage:
        read = self._get("cache_read")
        write = self._get("cache_write")
        write_5m, write_1h = self._get("write_5m"), self._get("write_1h")
        if write is None and (write_5m is not None or write_1h is not None):
            write = (write_5m or 0) + (write_1h or 0)
        return self._usage(
            input_tokens=plus(self._get("input"), read, write),
            output_tokens=self._get("output"),
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=write_1h,
        )
