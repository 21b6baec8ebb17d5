"""Budgets and alert rules as the config file states them (docs/configuration.md).

```toml
[alerts]
timezone = "UTC"           # days, weeks and months of the rules
notify = ["ops"]           # sinks every alert goes to (the log always gets it)
[alerts.sinks.ops]
webhook = "https://hooks.example/lumen"
[alerts.spend_spike]
factor = 3.0

[[budgets]]
name = "team-a"
scope = { tenant = "team-a*" }
period = "month"
amount_usd = 500
```

Parsing only: :class:`SettingsError` names the bad key; the config module
adds the file name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lumen_agent.errors import LumenError

# Scope fields: the name in the config -> the Call attribute it matches.
SCOPE_FIELDS: dict[str, str] = {
    "tenant": "tenant",
    "feature": "feature",
    "api_key_hash": "api_key_hash",
    "process": "process",
    "exe": "exe",
    "unit": "unit",
    "user": "user",
    "container": "container_id",
    "provider": "provider",
    "model": "model",
    "host": "host",
}
PERIODS = ("day", "week", "month", "24h", "7d")
ACTIONS = ("alert", "block")
DEFAULT_THRESHOLDS = (Decimal(50), Decimal(80), Decimal(100))
RULES = ("spend_spike", "new_model", "expensive_call", "error_burn", "unpriced_model", "embed_surge")
# Per-rule scopes: "all" and one scope per tenant.
RULE_SCOPES = ("all", "tenant")
# Sinks on their own threads wait at most this long for the network or a command.
DEFAULT_SINK_TIMEOUT_S = 5.0


class SettingsError(LumenError, ValueError):
    """A budget or alert setting that cannot be used."""


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    amount_usd: Decimal
    period: str = "month"  # day | week | month | 24h | 7d
    timezone: str = "UTC"
    # field -> patterns (exact values or globs); empty: every call.
    scope: tuple[tuple[str, tuple[str, ...]], ...] = ()
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS  # percent of amount_usd
    action: str = "alert"  # alert | block (blocks in proxy mode only)
    notify: tuple[str, ...] | None = None  # None: [alerts] notify

    @property
    def scope_text(self) -> str:
        if not self.scope:
            return "all"
        return ",".join(f"{k}={'|'.join(v)}" for k, v in self.scope)


@dataclass(frozen=True, slots=True)
class Sink:
    name: str
    webhook: str | None = None
    command: tuple[str, ...] | None = None
    timeout_s: float = DEFAULT_SINK_TIMEOUT_S
    retries: int = 3
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """One rule's switch, scopes, sinks and parameters (``params`` by name)."""

    enabled: bool = True
    scopes: tuple[str, ...] = RULE_SCOPES
    notify: tuple[str, ...] | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str) -> Any:
        return dict(self.params)[name]


# rule -> parameter -> (default, type); documented in docs/configuration.md.
RULE_PARAMS: dict[str, dict[str, tuple[Any, type]]] = {
    "spend_spike": {"factor": (2.0, float), "min_daily_usd": (1.0, float), "baseline_days": (7, int)},
    "new_model": {"days": (30, int), "allow": ((), tuple)},
    "expensive_call": {"max_usd": (None, float), "p99_factor": (10.0, float), "baseline_days": (7, int),
                       "min_baseline_calls": (100, int)},
    "error_burn": {"percent": (20.0, float), "window_minutes": (15, int), "min_calls": (10, int)},
    "unpriced_model": {},
    "embed_surge": {"min_tokens": (100_000, int)},
}


@dataclass(frozen=True, slots=True)
class AlertSettings:
    timezone: str = "UTC"
    notify: tuple[str, ...] = ()
    sinks: tuple[Sink, ...] = ()
    rules: tuple[tuple[str, RuleSettings], ...] = field(default_factory=lambda: tuple(
        (rule, RuleSettings(params=_defaults(rule))) for rule in RULES))

    def rule(self, name: str) -> RuleSettings:
        return dict(self.rules)[name]

    def sink(self, name: str) -> Sink:
        return {s.name: s for s in self.sinks}[name]


def _defaults(rule: str) -> tuple[tuple[str, Any], ...]:
    return tuple((name, default) for name, (default, _) in RULE_PARAMS[rule].items())


# -- parsing -------------------------------------------------------------------


def _zone(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"{where} timezone must be a string like \"UTC\" or \"Europe/Paris\"")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"{where} timezone {value!r} is not a known time zone") from None
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{where} must be a list of strings")
    return tuple(value)


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise SettingsError(f"{where} must be a number")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise SettingsError(f"{where} must be a number, not {value!r}") from None
    if not d.is_finite() or d < 0:
        raise SettingsError(f"{where} must be a positive number, not {value!r}")
    return d


def parse_budgets(items: Any, default_timezone: str = "UTC") -> tuple[Budget, ...]:
    if not isinstance(items, list):
        raise SettingsError("budgets must be an array of tables: [[budgets]]")
    budgets: list[Budget] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SettingsError(f"budgets[{i}] must be a table")
        unknown = set(item) - {"name", "scope", "period", "timezone", "amount_usd", "thresholds", "action",
                               "notify"}
        if unknown:
            raise SettingsError(f"budgets[{i}]: unknown key {sorted(unknown)[0]!r}")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise SettingsError(f"budgets[{i}] needs a name")
        if name in seen:
            raise SettingsError(f"budget {name!r} is defined twice")
        seen.add(name)
        where = f"budget {name!r}"
        if "amount_usd" not in item:
            raise SettingsError(f"{where} needs amount_usd")
        amount = _decimal(item["amount_usd"], f"{where} amount_usd")
        if amount == 0:
            raise SettingsError(f"{where} amount_usd must be above 0")
        period = item.get("period", "month")
        if period not in PERIODS:
            raise SettingsError(f"{where} period must be one of {', '.join(PERIODS)}, not {period!r}")
        action = item.get("action", "alert")
        if action not in ACTIONS:
            raise SettingsError(f"{where} action must be one of {', '.join(ACTIONS)}, not {action!r}")
        scope_table = item.get("scope", {})
        if scope_table == "all":
            scope_table = {}
        if not isinstance(scope_table, dict):
            raise SettingsError(f"{where} scope must be \"all\" or a table like {{ tenant = \"acme\" }}")
        scope: list[tuple[str, tuple[str, ...]]] = []
        for key, patterns in scope_table.items():
            if key not in SCOPE_FIELDS:
                raise SettingsError(f"{where} scope: unknown field {key!r} (use {', '.join(SCOPE_FIELDS)})")
            scope.append((key, _names(patterns, f"{where} scope {key}")))
        thresholds = tuple(_decimal(t, f"{where} thresholds") for t in item.get("thresholds", DEFAULT_THRESHOLDS))
        if not thresholds or any(t == 0 for t in thresholds):
            raise SettingsError(f"{where} thresholds must be percentages above 0")
        budgets.append(Budget(
            name=name, amount_usd=amount, period=period,
            timezone=_zone(item.get("timezone", default_timezone), where),
            scope=tuple(scope), thresholds=tuple(sorted(set(thresholds))), action=action,
            notify=_names(item["notify"], f"{where} notify") if "notify" in item else None))
    return tuple(budgets)


def parse_alerts(table: Any) -> AlertSettings:
    if not isinstance(table, dict):
        raise SettingsError("[alerts] must be a table")
    rules = dict(AlertSettings().rules)
    sinks: list[Sink] = []
    timezone = "UTC"
    notify: tuple[str, ...] = ()
    for key, value in table.items():
        if key == "timezone":
            timezone = _zone(value, "[alerts]")
        elif key == "notify":
            notify = _names(value, "[alerts] notify")
        elif key == "sinks":
            if not isinstance(value, dict):
                raise SettingsError("[alerts.sinks] must be tables: [alerts.sinks.NAME]")
            sinks = [_sink(name, spec) for name, spec in value.items()]
        elif key in RULE_PARAMS:
            rules[key] = _rule(key, value)
        else:
            raise SettingsError(f"[alerts]: unknown key {key!r} (rules: {', '.join(RULES)})")
    settings = AlertSettings(timezone=timezone, notify=notify, sinks=tuple(sinks), rules=tuple(rules.items()))
    check_sink_names(settings, ())
    return settings


def check_sink_names(settings: AlertSettings, budgets: tuple[Budget, ...]) -> None:
    known = {s.name for s in settings.sinks} | {"log"}
    wanted = [("[alerts] notify", settings.notify)]
    wanted += [(f"[alerts.{r}] notify", s.notify or ()) for r, s in settings.rules]
    wanted += [(f"budget {b.name!r} notify", b.notify or ()) for b in budgets]
    for where, names in wanted:
        for name in names:
            if name not in known:
                raise SettingsError(f"{where}: no sink named {name!r} (define [alerts.sinks.{name}])")


def _sink(name: str, spec: Any) -> Sink:
    where = f"[alerts.sinks.{name}]"
    if not isinstance(spec, dict):
        raise SettingsError(f"{where} must be a table")
    unknown = set(spec) - {"webhook", "command", "timeout_s", "retries", "headers"}
    if unknown:
        raise SettingsError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    webhook = spec.get("webhook")
    command = spec.get("command")
    if (webhook is None) == (command is None):
        raise SettingsError(f"{where} needs exactly one of webhook = \"URL\" or command = [\"PROGRAM\", ...]")
    if webhook is not None and (not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))):
        raise SettingsError(f"{where} webhook must be an http:// or https:// URL")
    if command is not None:
        command = _names(command, f"{where} command")
        if not command:
            raise SettingsError(f"{where} command must name a program")
    timeout = spec.get("timeout_s", DEFAULT_SINK_TIMEOUT_S)
    retries = spec.get("retries", 3)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise SettingsError(f"{where} timeout_s must be a number of seconds above 0")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise SettingsError(f"{where} retries must be an integer from 0 to 10")
    headers = spec.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise SettingsError(f"{where} headers must be a table of strings")
    return Sink(name=name, webhook=webhook, command=command, timeout_s=float(timeout), retries=retries,
                headers=tuple(headers.items()))


def _rule(rule: str, value: Any) -> RuleSettings:
    where = f"[alerts.{rule}]"
    if not isinstance(value, dict):
        raise SettingsError(f"{where} must be a table")
    params = dict(_defaults(rule))
    enabled, scopes, notify = True, RULE_SCOPES, None
    for key, v in value.items():
        if key == "enabled":
            if not isinstance(v, bool):
                raise SettingsError(f"{where} enabled must be true or false")
            enabled = v
        elif key == "scopes":
            scopes = _names(v, f"{where} scopes")
            bad = [s for s in scopes if s not in RULE_SCOPES]
            if bad:
                raise SettingsError(f"{where} scopes: {bad[0]!r} is not one of {', '.join(RULE_SCOPES)}")
        elif key == "notify":
            notify = _names(v, f"{where} notify")
        elif key in RULE_PARAMS[rule]:
            _, kind = RULE_PARAMS[rule][key]
            if kind is tuple:
                params[key] = _names(v, f"{where} {key}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise SettingsError(f"{where} {key} must be a number of at least 0")
            else:
                params[key] = kind(v)
        else:
            known = ", ".join(["enabled", "scopes", "notify", *RULE_PARAMS[rule]])
            raise SettingsError(f"{where}: unknown key {key!r} (known: {known})")
    return RuleSettings(enabled=enabled, scopes=scopes, notify=notify, params=tuple(params.items()))


# -- back to TOML (``lumen-agent config show``) -------------------------------------


def as_toml_lines(settings: AlertSettings, budgets: tuple[Budget, ...], value: Any) -> list[str]:
    """``value`` renders one TOML value (config._toml_value)."""
    lines = ["[alerts]", f"timezone = {value(settings.timezone)}", f"notify = {value(list(settings.notify))}", ""]
    for sink in settings.sinks:
        lines.append(f"[alerts.sinks.{sink.name}]")
        if sink.webhook:
            lines.append(f"webhook = {value(sink.webhook)}")
        if sink.command:
            lines.append(f"command = {value(list(sink.command))}")
        lines += [f"timeout_s = {value(sink.timeout_s)}", f"retries = {value(sink.retries)}"]
        if sink.headers:
            lines.append(f"headers = {value(dict(sink.headers))}")
        lines.append("")
    for rule, s in settings.rules:
        lines += [f"[alerts.{rule}]", f"enabled = {value(s.enabled)}", f"scopes = {value(list(s.scopes))}"]
        if s.notify is not None:
            lines.append(f"notify = {value(list(s.notify))}")
        for name, v in s.params:
            if v is None:
                lines.append(f"# {name} =")
            else:
                lines.append(f"{name} = {value(list(v) if isinstance(v, tuple) else v)}")
        lines.append("")
    for b in budgets:
        lines += ["[[budgets]]", f"name = {value(b.name)}", f"amount_usd = {value(float(b.amount_usd))}",
                  f"period = {value(b.period)}", f"timezone = {value(b.timezone)}",
                  f"scope = {value({k: list(v) for k, v in b.scope}) if b.scope else value('all')}",
                  f"thresholds = {value([float(t) for t in b.thresholds])}", f"action = {value(b.action)}"]
        if b.notify is not None:
            lines.append(f"notify = {value(list(b.notify))}")
        lines.append("")
    return lines
