"""Enforcement in proxy mode: a budget with action = "block" turns the next
OpenAI-SDK call in its scope into a 429 that the SDK raises as RateLimitError,
in OpenAI's own error format, without reaching the provider; the refused call
is recorded."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import openai
import pytest
from support import certs as certs_mod
from support import fake_provider as fp

from lumen_agent.config import load
from lumen_agent.proxy import ProxyThread, Routes
from lumen_agent.proxy.sink import LocalSink

pytestmark = pytest.mark.slow

CONFIG = """
[[budgets]]
name = "acme-cap"
scope = { tenant = "acme", provider = "openai" }
period = "day"
amount_usd = 1
action = "block"
"""


class Calls:
    def __init__(self) -> None:
        self.calls: list = []
        self._cond = threading.Condition()

    def __call__(self, call) -> None:
        with self._cond:
            self.calls.append(call)
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.calls) < n and time.monotonic() < deadline:
                self._cond.wait(0.1)
            return list(self.calls)


def test_block_budget_turns_the_next_call_into_rate_limit_error(tmp_path, monkeypatch):
    certs = certs_mod.ensure_certs(tmp_path / "certs")
    for name, sub in (("LUMEN_STATE_DIR", "state"), ("LUMEN_CONFIG_DIR", "etc"), ("LUMEN_RUNTIME_DIR", "run")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))
    (tmp_path / "config.toml").write_text(CONFIG)
    config = load(tmp_path / "config.toml", {"db": tmp_path / "proxy.duckdb", "flush_interval_s": 0.2})
    server = fp.spawn(certs, workdir=tmp_path / "fake")
    calls = Calls()
    try:
        routes = Routes.build({}, [f"/openai=https://api.openai.com:{server.port}"])
        sink = LocalSink(config, on_call=calls)
        with ProxyThread(routes, sink, resolve={("api.openai.com", server.port): "127.0.0.1"}) as proxy:
            def client(tenant: str) -> openai.OpenAI:
                # 60,000 output tokens of gpt-4o (answered as gpt-4o-2024-08-06) at $10 per 1M: $0.60
                return openai.OpenAI(api_key="sk-test-fake", base_url=f"{proxy.url}/openai/v1", max_retries=0,
                                     default_headers={"x-lumen-tenant": tenant,
                                                      "x-fake-usage": "input=0,cache_read=0,output=60000"})

            acme = client("acme")
            for n in (1, 2):  # $0.60, then $1.20: the second crosses the $1 budget (it was allowed to start)
                acme.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
                calls.wait(n)
            assert [c.cost_usd for c in calls.calls] == [Decimal("0.6"), Decimal("0.6")]
            served = len(server.served())

            with pytest.raises(openai.RateLimitError) as raised:
                acme.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            error = raised.value
            assert error.status_code == 429
            assert error.body == {
                "message": "lumen-agent budget 'acme-cap' is spent: $1.20000000 of $1 this day period; requests in "
                           "its scope are refused until it ends",
                "type": "requests", "param": None, "code": "rate_limit_exceeded"}
            assert error.response.headers["x-lumen-budget"] == "acme-cap"
            assert 0 < int(error.response.headers["retry-after"]) <= 86_400
            assert len(server.served()) == served  # the provider never saw it

            # Another tenant is outside the budget's scope.
            client("beta").chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            rows = calls.wait(4)
            assert len(server.served()) == served + 1
            refused = [c for c in rows if c.status_code == 429]
            assert [(c.tenant, c.outcome.value, c.cost_usd, c.request_model, c.capture) for c in refused] == [
                ("acme", "rate_limited", None, "gpt-4o", "proxy")]
            assert sink.guard.refused == 1
    finally:
        assert server.stop() == 0
