"""The agent's configuration: one TOML file, overridden by command-line flags.

Every option, its default and its meaning is in ``OPTIONS`` below, which is
also what ``lumen-agent config show`` prints and what docs/configuration.md
documents.  The file is ``/etc/lumen-agent/config.toml`` as root (the
per-user config folder otherwise, or ``--config PATH``); a missing file means
all defaults.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lumen_agent import paths
from lumen_agent.errors import LumenError
from lumen_agent.outputs.alerts.settings import (
    AlertSettings,
    Budget,
    SettingsError,
    as_toml_lines,
    check_sink_names,
    parse_alerts,
    parse_budgets,
)
from lumen_agent.pipeline.filters import FIELDS, ProcessFilter


class ConfigError(LumenError, ValueError):
    """A configuration file or value that cannot be used (one line, names the file)."""


@dataclass(frozen=True, slots=True)
class Config:
    # [agent]
    db: Path = field(default_factory=paths.default_db_path)
    capture: str = "auto"  # auto | ebpf | hook | proxy | plain
    attach: str = "global"  # global | per-process
    capture_content: bool = False
    record: Path | None = None
    flush_interval_s: float = 2.0
    max_call_bytes: int = 256 * 1024
    metrics_addr: str | None = None  # e.g. "127.0.0.1:9464"; off when unset
    # None: the runtime directory of ``db`` (paths.runtime_dir), filled in below.
    runtime_dir: Path = None  # type: ignore[assignment]
    # Members of this group may hand events to the ingest socket (besides
    # root and the agent's own user); a group that does not exist admits no one.
    ingest_group: str | None = "lumen-agent"
    log_level: str = "info"
    # [pricing]
    price_overrides: Path = field(default_factory=paths.default_price_overrides_path)
    # [attribution]
    default_tenant: str | None = None
    default_feature: str | None = None
    # [filters]
    filters: ProcessFilter = field(default_factory=ProcessFilter)
    # [capture]
    # TCP ports sniffed for plain-HTTP LLM traffic (local model servers,
    # gateways): Ollama, vLLM, llama.cpp, LM Studio, LiteLLM.  Empty: off.
    plain_http_ports: tuple[int, ...] = (11434, 8000, 8080, 1234, 4000)
    # [proxy]
    proxy_listen: str = "127.0.0.1:8787"
    # Where your application's requests go, by path prefix: "/openai" ->
    # "https://api.openai.com".  See docs/configuration.md.
    proxy_upstreams: dict[str, str] = field(default_factory=dict)
    # [export.*]: off unless set
    hostname: str | None = None  # the `host` of every row; this machine's name when unset
    export_otlp: str | None = None  # e.g. "http://collector:4318"
    export_otlp_protocol: str = "http/protobuf"
    export_otlp_headers: dict[str, str] = field(default_factory=dict)
    export_parquet: Path | None = None  # ROOT of host=H/date=D/part-*.parquet
    export_parquet_interval_s: float = 300.0
    export_redis: str | None = None  # e.g. "redis://host:6379/0"
    export_redis_stream: str = "lumen:calls"
    export_redis_maxlen: int = 1_000_000
    export_redis_per_tenant: bool = False
    # [[budgets]] and [alerts]: spend control (outputs/alerts/settings.py).
    budgets: tuple[Budget, ...] = ()
    alerts: AlertSettings = field(default_factory=AlertSettings)
    # `run --init`: add our tables to a DuckDB file that holds other tables.
    # A command-line choice only, never in the file.
    adopt_db: bool = False

    def __post_init__(self) -> None:
        if self.runtime_dir is None:
            object.__setattr__(self, "runtime_dir", paths.runtime_dir(self.db))

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "agent.sock"

    @property
    def status_path(self) -> Path:
        return self.runtime_dir / "status.json"


# option name -> (section, key, description); the order is the documented order.
OPTIONS: dict[str, tuple[str, str, str]] = {
    "db": ("agent", "db", "DuckDB file the agent appends calls to"),
    "capture": ("agent", "capture", "how calls are seen: auto, ebpf, hook, proxy or plain (plain HTTP only)"),
    "attach": ("agent", "attach", "eBPF attach mode: global or per-process (see README)"),
    "capture_content": ("agent", "capture_content", "also store prompt and completion text"),
    "record": ("agent", "record", "also append captured events to this file (replay format)"),
    "flush_interval_s": ("agent", "flush_interval_s", "seconds between appends to the database"),
    "max_call_bytes": ("agent", "max_call_bytes", "bytes of one SSL call copied whole by the probes"),
    "metrics_addr": ("agent", "metrics_addr", "serve Prometheus metrics on HOST:PORT (off when empty)"),
    "runtime_dir": ("agent", "runtime_dir", "folder of the agent's sockets, status file and lock [default: follows db]"),
    "ingest_group": ("agent", "ingest_group", "group whose members may send events to the ingest socket "
                     "(besides root and the agent's user)"),
    "log_level": ("agent", "log_level", "debug, info, warning or error"),
    "price_overrides": ("pricing", "overrides", "TOML file that adds or replaces prices (pricing/README.md)"),
    "default_tenant": ("attribution", "tenant", "tenant of calls that send no x-lumen-tenant header"),
    "default_feature": ("attribution", "feature", "feature of calls that send no x-lumen-feature header"),
    "filters": ("filters", "*", "include_/exclude_ process, exe, user, unit, container: lists of patterns"),
    "plain_http_ports": ("capture", "plain_http_ports", "TCP ports sniffed for plain-HTTP LLM calls ([] = off; "
                         "see docs/plain-http.md)"),
    "proxy_listen": ("proxy", "listen", "address of `lumen-agent proxy`"),
    "proxy_upstreams": ("proxy", "upstreams", "path prefix -> upstream base URL"),
    "hostname": ("agent", "hostname", "the host name on every row (default: this machine's)"),
    "export_otlp": ("export.otlp", "endpoint", "send each call to this OTLP endpoint (docs/export.md)"),
    "export_otlp_protocol": ("export.otlp", "protocol", "http/protobuf or grpc"),
    "export_otlp_headers": ("export.otlp", "headers", "extra request headers (OTEL_EXPORTER_OTLP_HEADERS too)"),
    "export_parquet": ("export.parquet", "root", "write calls as Parquet under ROOT/host=H/date=D/"),
    "export_parquet_interval_s": ("export.parquet", "interval", "seconds between Parquet exports"),
    "export_redis": ("export.redis", "url", "XADD each call to a Redis stream at this URL"),
    "export_redis_stream": ("export.redis", "stream", "the Redis stream's key"),
    "export_redis_maxlen": ("export.redis", "maxlen", "approximate cap of the stream (MAXLEN ~)"),
    "export_redis_per_tenant": ("export.redis", "per_tenant", "also XADD to STREAM:{tenant}"),
}

# Numbers outside these ranges are mistakes, not settings: (low, high, why).
_RANGES: dict[str, tuple[float, float, str]] = {
    # Below 50 ms the file is reopened constantly and readers never get in;
    # above an hour a crash loses an hour of rows.
    "flush_interval_s": (0.05, 3600.0, "seconds"),
    # The probes copy whole 16 KiB chunks, at most 4 MiB (capture/ebpf.py).
    "max_call_bytes": (16 * 1024, 4 * 1024 * 1024, "bytes"),
}

_CHOICES = {
    "capture": ("auto", "ebpf", "hook", "proxy", "plain"),
    "attach": ("global", "per-process"),
    "log_level": ("debug", "info", "warning", "error"),
    "export_otlp_protocol": ("http/protobuf", "grpc"),
}


def default_config_path() -> Path:
    return paths.config_dir() / "config.toml"


def load(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The file's settings (all defaults when the default file is absent), then ``overrides``.

    ``overrides`` are command-line values by option name; None means "not given".
    """
    explicit = path is not None
    path = path or default_config_path()
    values: dict[str, Any] = {}
    try:
        with open(path, "rb") as f:
            data = tomllib.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such configuration file") from None
        data = {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        values.update(_from_toml(data, path))
    except SettingsError as exc:
        raise ConfigError(f"{path}: {exc.problem}") from None
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    return _build(values, path)


def _from_toml(data: dict[str, Any], path: Path) -> dict[str, Any]:
    by_key = {(section, key): name for name, (section, key, _) in OPTIONS.items()}
    sections = {section for section, _ in by_key}
    values: dict[str, Any] = {}
    if "alerts" in data:
        values["alerts"] = parse_alerts(data["alerts"])
    if "budgets" in data:
        zone = values["alerts"].timezone if "alerts" in values else "UTC"
        values["budgets"] = parse_budgets(data["budgets"], default_timezone=zone)

    def read(section: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section!r} must be a [section]")
        if section == "filters":
            values["filters"] = _filters(table, path)
            return
        for key, value in table.items():
            name = by_key.get((section, key))
            if name is not None:
                values[name] = value
            elif f"{section}.{key}" in sections:  # [export.otlp] is a table in [export]
                read(f"{section}.{key}", value)
            else:
                raise ConfigError(f"{path}: unknown option [{section}] {key}")

    for section, table in data.items():
        if section not in ("alerts", "budgets"):
            read(section, table)
    return values


def _filters(table: dict[str, Any], path: Path) -> ProcessFilter:
    include: dict[str, tuple[str, ...]] = {}
    exclude: dict[str, tuple[str, ...]] = {}
    for key, patterns in table.items():
        kind, _, what = key.partition("_")
        if kind not in ("include", "exclude") or what not in FIELDS:
            raise ConfigError(f"{path}: unknown filter {key!r} (use include_/exclude_ + {', '.join(FIELDS)})")
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"{path}: filter {key} must be a list of strings")
        (include if kind == "include" else exclude)[what] = tuple(patterns)
    return ProcessFilter(include, exclude)


def _build(values: dict[str, Any], path: Path) -> Config:
    config = Config()
    types = {f.name: f.type for f in fields(Config)}
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if name == "filters":
            clean[name] = value if isinstance(value, ProcessFilter) else _filters(value, path)
            continue
        if name in ("budgets", "alerts"):
            clean[name] = value
            continue
        kind = types[name]
        where = _where(name)
        try:
            clean[name] = _coerce(kind, value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: {where} must be {_KIND_NAMES.get(kind, kind)}, "
                              f"not {_shown(value)}") from None
        if name in _CHOICES and clean[name] not in _CHOICES[name]:
            raise ConfigError(f"{path}: {where} must be one of {', '.join(_CHOICES[name])}, "
                              f"not {_shown(clean[name])}")
        if name in _RANGES:
            low, high, unit = _RANGES[name]
            if not (math.isfinite(clean[name]) and low <= clean[name] <= high):
                raise ConfigError(f"{path}: {where} must be between {low:g} and {high:g} {unit}, "
                                  f"not {_shown(value)}")
    for name in ("metrics_addr", "hostname", "export_otlp", "export_redis"):
        if clean.get(name) == "":
            clean[name] = None
    if clean.get("export_parquet") == Path(""):
        clean["export_parquet"] = None
    if clean.get("record") == Path(""):
        clean["record"] = None
    if clean.get("runtime_dir") in (None, Path("")):
        # Not set: the agent of this database has its own folder.
        clean["runtime_dir"] = paths.runtime_dir(clean.get("db", config.db))
    config = replace(config, **clean)
    try:
        check_sink_names(config.alerts, config.budgets)
    except SettingsError as exc:
        raise ConfigError(f"{path}: {exc.problem}") from None
    return config


_KIND_NAMES = {"Path": "a path (a string)", "Path | None": "a path (a string)", "bool": "true or false",
               "int": "a whole number", "float": "a number", "str": "a string", "str | None": "a string",
               "dict[str, str]": "a table of strings"}


def _where(name: str) -> str:
    section, key, _ = OPTIONS.get(name, ("", name, ""))
    return f"[{section}] {key}" if section else f"option {name}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(kind: str, value: Any) -> Any:
    """``value`` as the option's type; TypeError when it is another type
    (``db = 42`` is a mistake, not the path "42")."""
    if value is None and "None" in kind:
        return None
    if kind == "Path" or kind.startswith("Path"):
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or "\0" in value:
            raise TypeError
        if value == "":
            return None if "None" in kind else Path(value)
        return Path(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError
        return float(value)
    if kind.startswith("tuple[int"):
        if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise TypeError
        if any(not 0 < v < 65536 for v in value):
            raise ValueError
        return tuple(value)
    if kind.startswith("dict"):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise TypeError
        return {str(k): v for k, v in value.items()}
    if not isinstance(value, str):
        raise TypeError
    return value


def as_toml(config: Config) -> str:
    """The effective configuration, as a TOML file that would reproduce it."""
    sections: dict[str, list[str]] = {}
    for name, (section, key, description) in OPTIONS.items():
        value = getattr(config, name)
        lines = sections.setdefault(section, [])
        if name == "filters":
            for kind, rules in (("include", value.include), ("exclude", value.exclude)):
                for what, patterns in rules.items():
                    lines.append(f"{kind}_{what} = {_toml_value(list(patterns))}")
            if not lines:
                lines.append("# " + description)
            continue
        lines.append(f"# {description}")
        if value is None:
            lines.append(f"# {key} =")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = []
    for section, lines in sections.items():
        out.append(f"[{section}]")
        out.extend(lines)
        out.append("")
    out.extend(as_toml_lines(config.alerts, config.budgets, _toml_value))
    return "\n".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)
