"""Ollama native API usage (``/api/chat``, ``/api/generate``, ``/api/embed``).

``prompt_eval_count`` is the input, ``eval_count`` the output; there are no
cache or reasoning counts.  Streams are NDJSON and only the final object
(``done: true``) carries the counts.  ``/api/embed`` reports only
``prompt_eval_count``.  (Ollama's OpenAI-compatible ``/v1/...`` endpoints are
read by the OpenAI readers.)
"""

from __future__ import annotations

from typing import Any

from lumen_agent.parsers.providers.base import BaseReader
from lumen_agent.parsers.usage import Usage


class OllamaReader(BaseReader):
    __slots__ = ("_embedding",)

    def __init__(self, *, embedding: bool = False) -> None:
        super().__init__()
        self._embedding = embedding

    def _take(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self._note_identity(obj.get("model"), None)
        self._note("prompt", obj.get("prompt_eval_count"))
        self._note("output", obj.get("eval_count"))

    def result(self) -> Usage:
        prompt, output = self._get("prompt"), self._get("output")
        if self._embedding and prompt is not None:
            output = 0
        return self._usage(input_tokens=prompt, output_tokens=output)
