"""Where the proxy sends a request: path prefix -> upstream base URL.

``/openai/v1/chat/completions`` with the route ``/openai`` ->
``https://api.openai.com`` goes to ``https://api.openai.com/v1/chat/completions``:
the prefix is replaced by the upstream's base (its path included, so
``/openrouter`` -> ``https://openrouter.ai/api`` works too).  The longest
matching prefix wins, matched on whole path segments.  A route for ``/``
catches everything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from lumen_agent.errors import LumenError

# Prefix -> upstream base.  Point a client's base URL at
# http://127.0.0.1:PORT + prefix + the path it would put after the host.
DEFAULT_UPSTREAMS: dict[str, str] = {
    "/openai": "https://api.openai.com",
    "/anthropic": "https://api.anthropic.com",
    "/gemini": "https://generativelanguage.googleapis.com",
    "/mistral": "https://api.mistral.ai",
    "/groq": "https://api.groq.com",
    "/deepseek": "https://api.deepseek.com",
    "/xai": "https://api.x.ai",
    "/openrouter": "https://openrouter.ai",
    "/together": "https://api.together.xyz",
    "/fireworks": "https://api.fireworks.ai",
    "/cerebras": "https://api.cerebras.ai",
    "/perplexity": "https://api.perplexity.ai",
    "/cohere": "https://api.cohere.com",
}


class RouteError(LumenError, ValueError):
    """A route or upstream URL that cannot be used (one line)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    scheme: str  # "https" or "http"
    host: str
    port: int
    base_path: str  # "" or "/api" (no trailing slash)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """The Host header value: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def key(self) -> tuple[str, str, int]:
        """Connections to the same key can be shared."""
        return (self.scheme, self.host, self.port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.base_path}"


def parse_upstream(url: str) -> Upstream:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RouteError(f"upstream {url!r} must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username:
        raise RouteError(f"upstream {url!r} must not have a query, fragment or credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RouteError(f"upstream {url!r} has a bad port") from None
    return Upstream(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def _normalise_prefix(prefix: str) -> str:
    prefix = "/" + prefix.strip().strip("/")
    if any(c in prefix for c in "?# "):
        raise RouteError(f"route prefix {prefix!r} must be a plain path")
    return prefix


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str  # "/openai", or "/" for everything
    upstream: Upstream


class Routes:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        if not self._routes:
            raise RouteError("no upstreams configured")

    @classmethod
    def build(cls, configured: Mapping[str, str] | None = None, cli: Iterable[str] = (),
              *, defaults: bool = True) -> Routes:
        """Defaults, then the configuration's ``proxy_upstreams``, then ``--upstream`` values.

        A ``--upstream URL`` without ``PREFIX=`` sends everything there and
        drops the defaults (one proxy in front of one provider).
        """
        table: dict[str, str] = {}
        cli = list(cli)
        catch_all = [v for v in cli if "=" not in v]
        if len(catch_all) > 1:
            raise RouteError("give at most one --upstream URL without a PREFIX=")
        if defaults and not catch_all:
            table.update(DEFAULT_UPSTREAMS)
        for prefix, url in (configured or {}).items():
            table[_normalise_prefix(prefix)] = url
        for value in cli:
            if "=" in value:
                prefix, _, url = value.partition("=")
                table[_normalise_prefix(prefix)] = url
            else:
                table["/"] = value
        return cls(Route(_normalise_prefix(p), parse_upstream(u)) for p, u in table.items())

    def __iter__(self):
        return iter(sorted(self._routes, key=lambda r: r.prefix))

    def match(self, target: str) -> tuple[Route, str] | None:
        """The route for an origin-form target, and the target to send upstream."""
        path, sep, query = target.partition("?")
        for route in self._routes:
            p = route.prefix
            if p == "/":
                rest = path
            elif path == p or path.startswith(p + "/"):
                rest = path[len(p):]
            else:
                continue
            upstream_path = route.upstream.base_path + rest
            if not upstream_path.startswith("/"):
                upstream_path = "/" + upstream_path
            return route, upstream_path + sep + query
        return None
