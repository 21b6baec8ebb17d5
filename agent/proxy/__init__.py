"""``lumen-agent proxy``: user-space capture for programs in any language.

A local plain-HTTP endpoint in front of the LLM providers.  Clients point
their base URL at it (``OPENAI_BASE_URL=http://127.0.0.1:8787/openai/v1``);
it forwards each request over verified TLS to the provider chosen by path
prefix and relays the response as it arrives.  It sees the upstream
connection as its client would, so it produces the same ``DataEvent``s as
the eBPF probes and feeds the same pipeline: see docs/proxy.md.

Modules: ``framing`` (sans-I/O heads and body boundaries), ``routes``
(prefix -> upstream), ``server`` (asyncio forwarding), ``sink`` (events to a
running agent or to a pipeline of its own), ``peers`` (client pid from the
TCP peer), ``runner`` (wiring, signals, a thread form for tests).
"""

from lumen_agent.proxy.routes import DEFAULT_UPSTREAMS, RouteError, Routes
from lumen_agent.proxy.runner import ProxyOptions, ProxyThread, run_proxy

__all__ = ["DEFAULT_UPSTREAMS", "ProxyOptions", "ProxyThread", "RouteError", "Routes", "run_proxy"]
