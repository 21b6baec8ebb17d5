"""Budget enforcement in proxy mode: refuse a request whose budget is spent.

Only the proxy can block: it holds the request before the provider sees it.
(The eBPF agent reads TLS bytes after the application wrote them; it
observes and cannot block.)  :class:`BudgetGuard` answers, for a request
about to be forwarded, which ``action = "block"`` budget refuses it, from the
budget state of the alerts output that the proxy's local pipeline feeds.

The request's scope is what the proxy knows before forwarding: tenant and
feature (``x-lumen-*`` headers or the configured defaults), provider (from
the upstream host), host, the model named in a JSON body or a Gemini path,
the credential's hash, and the client process.  A budget scoped on a field
the proxy cannot know for a request does not match it (fail open).

:func:`refusal` is the 429 in the provider's own error format, so SDKs raise
their usual rate-limit error (``openai.RateLimitError``, ``anthropic.RateLimitError``).
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lumen_agent import paths
from lumen_agent.outputs.alerts.engine import BudgetState
from lumen_agent.outputs.alerts.output import AlertsOutput
from lumen_agent.parsers.providers.recognise import provider_of_host
from lumen_agent.pipeline.keyhash import credential, hash_credential, load_or_create_salt

# A request body larger than this is not parsed for its model.
MAX_MODEL_BODY = 1024 * 1024
_GEMINI_MODEL = re.compile(r"/models/([^/:?]+)")


@dataclass(slots=True)
class RequestScope:
    """The scope fields of a request that is not a call yet (same names as Call)."""

    tenant: str | None = None
    feature: str | None = None
    provider: str | None = None
    model: str | None = None
    host: str | None = None
    api_key_hash: str | None = None
    process: str | None = None
    exe: str | None = None
    user: str | None = None
    unit: str | None = None
    container_id: str | None = None


def request_model(target: str, body: bytes | None) -> str | None:
    """The model a request names: ``"model"`` of a JSON body, or Gemini's ``/models/NAME:...``."""
    if body and len(body) <= MAX_MODEL_BODY:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            return data["model"]
    m = _GEMINI_MODEL.search(target)
    return m.group(1) if m else None


class BudgetGuard:
    def __init__(self, output: AlertsOutput, *, config: Any = None,
                 describe: Callable[[int], Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self._states: list[BudgetState] = [s for s in output.engine.budgets if s.budget.action == "block"]
        self._clock = clock
        self._describe = describe
        self._default_tenant = getattr(config, "default_tenant", None)
        self._default_feature = getattr(config, "default_feature", None)
        self._host = socket.gethostname()
        self._salt = load_or_create_salt(paths.state_dir()) if self._states else b""
        self.refused = 0

    def scope(self, headers: Mapping[str, str], target: str, authority: str, body: bytes | None,
              client_id: int | None = None) -> RequestScope:
        """What is known of a request before it is forwarded (``headers`` by lower-case name)."""
        secret = credential(headers, target)
        scope = RequestScope(
            tenant=headers.get("x-lumen-tenant") or self._default_tenant,
            feature=headers.get("x-lumen-feature") or self._default_feature,
            provider=provider_of_host(authority), model=request_model(target, body), host=self._host,
            api_key_hash=hash_credential(secret, self._salt) if secret else None)
        if client_id is not None and self._describe is not None:
            info = self._describe(client_id)
            if info is not None:
                scope.process, scope.exe, scope.user = info.process, info.exe, info.user
                scope.unit, scope.container_id = info.unit, info.container_id
        return scope

    def __bool__(self) -> bool:
        return bool(self._states)

    def check(self, scope: RequestScope) -> BudgetState | None:
        """The first spent "block" budget whose scope holds this request, or None."""
        now = self._clock()
        for state in self._states:
            if not state.exhausted():
                continue
            if state.clock is not None and not state.clock.start <= now < state.clock.end:
                continue  # its period is over; the next call starts a new one
            if state.matches(scope):  # type: ignore[arg-type]  # RequestScope has the fields it reads
                self.refused += 1
                return state
        return None

    def retry_after(self, state: BudgetState) -> int:
        """Seconds until the budget's period ends (rolling: until its oldest spend leaves the window)."""
        now = self._clock()
        if state.clock is not None:
            end = state.clock.end
        elif state.rolling is not None and state.rolling.buckets:
            end = state.rolling.buckets[0][0] + state.rolling.seconds
        else:
            end = now + 60
        return max(1, math.ceil(end - now))


def refusal(provider: str | None, state: BudgetState, retry_after: int) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the 429 in ``provider``'s own error format."""
    budget = state.budget
    message = (f"lumen-agent budget {budget.name!r} is spent: ${state.spent} of ${budget.amount_usd} "
               f"this {budget.period} period; requests in its scope are refused until it ends")
    headers = {"Content-Type": "application/json", "Retry-After": str(retry_after),
               "x-lumen-budget": budget.name}
    if provider == "anthropic":
        body: Any = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    elif provider == "google":
        body = {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}}
    elif provider == "bedrock":
        headers["x-amzn-ErrorType"] = "ThrottlingException"
        body = {"message": message}
    else:  # OpenAI and the OpenAI-compatible APIs
        body = {"error": {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
    return 429, headers, json.dumps(body).encode()


def response_bytes(status: int, headers: Mapping[str, str], body: bytes, *, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} Too Many Requests"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", f"Connection: {'close' if close else 'keep-alive'}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
