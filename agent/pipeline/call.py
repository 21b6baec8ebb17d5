"""The row: one LLM API call, as stored in table ``llm_calls`` (DESIGN.md section 3)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal


class Outcome(enum.Enum):
    SUCCESS = "success"
    ERROR = "error"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @classmethod
    def from_status(cls, status: int | None, complete: bool) -> Outcome:
        if not complete:
            return cls.CANCELLED
        if status is None:
            return cls.ERROR
        if status == 429:
            return cls.RATE_LIMITED
        if status == 408 or status == 504:
            return cls.TIMEOUT
        if 200 <= status < 300:
            return cls.SUCCESS
        return cls.ERROR

    @classmethod
    def from_stream_exception(cls, name: str | None) -> Outcome | None:
        """The outcome of a stream that reported an exception event (AWS event
        stream: ``throttlingException``, ``modelStreamErrorException``...)."""
        if not name:
            return None
        return cls.RATE_LIMITED if "throttl" in name.lower() else cls.ERROR


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    ts_start: datetime  # timezone-aware UTC
    ts_end: datetime
    latency_ms: float
    ttft_ms: float | None
    host: str
    pid: int
    process: str | None
    exe: str | None
    user: str | None
    unit: str | None
    container_id: str | None
    provider: str
    endpoint: str
    server_address: str | None
    server_port: int | None
    request_model: str | None
    model: str | None
    streaming: bool
    status_code: int | None
    outcome: Outcome
    request_id: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    cache_write_1h_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: Decimal | None
    price_id: str | None
    unpriced: bool  # tokens known but no price row matched the model
    usage_missing: bool  # the response reported no usage (tokens NULL, never invented)
    api_key_hash: str | None
    tenant: str | None
    feature: str | None
    capture: str  # ebpf, hook, proxy, pcap, replay
    http_version: str = "1.1"
    # Prompt and completion text: only when the user turned content capture on.
    request_body: str | None = None
    response_body: str | None = None
    # Exact cost (schema migration 3).  cost_usd is what the call cost: the
    # provider's stated charge (charged_usd) when it gives one, else
    # token_cost_usd, the price table's figure (tokens plus request fees).
    token_cost_usd: Decimal | None = None
    charged_usd: Decimal | None = None
    service_tier: str | None = None
    web_search_requests: int | None = None
    input_audio_tokens: int | None = None
    cache_read_audio_tokens: int | None = None
    # A token count was negative, absurd or not a number: it is NULL and the
    # call is not priced (pipeline/bounds.py).
    usage_implausible: bool = False
    # Rows handed in over the ingest socket: the uid of the sending process.
    sender_uid: int | None = None


CALL_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Call))
