"""The budgets and rules, evaluated incrementally from the stream of calls.

Pure: no I/O and no clock.  Time is the calls' own ``ts_start`` (epoch
seconds) and whatever :meth:`Engine.advance` is told, so a recording, a test
or the live agent drive it the same way.  Each call costs a few dictionary
updates per budget and per rule scope; nothing is rescanned.

Every alert has a key ``(rule, scope, subject, period)``: at most one alert
per key is firing (dedup); when it resolves, the key is free to fire again
(re-arm).  ``subject`` is the model (new_model, unpriced_model) or the
threshold (budgets); ``period`` the day, week or month label of calendar
rules, ``rolling`` for rolling budgets.

What changed is appended to :attr:`Engine.changes` as ``("fire" | "update" |
"resolve", alert)``; the agent output drains it after each call.
"""

from __future__ import annotations

import heapq
import math
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from operator import attrgetter
from typing import Any

from lumen_agent.outputs.alerts.periods import ROLLING_SECONDS, CalendarClock, RollingSum
from lumen_agent.outputs.alerts.settings import SCOPE_FIELDS, AlertSettings, Budget
from lumen_agent.pipeline.call import Call, Outcome

INF = float("inf")
DAY_S = 86_400
# Call ids kept on one alert: the ones that tripped it, then the first few after.
MAX_CALL_IDS = 20
# Distinct tenants given their own rule scope; calls of later tenants count in
# "all" only (memory is per scope).
MAX_TENANT_SCOPES = 500
# Largest costs kept per scope and day for the p99 of expensive_call: exact
# while a scope makes fewer than 100 x this many calls in the baseline days.
P99_TOP_K = 2_000
# Distinct values remembered per scope field for glob matching.
MATCH_CACHE = 10_000
# Endpoints whose tokens are embedding tokens (embed_surge).
EMBED_ENDPOINTS = frozenset({"embeddings", "embedContent", "batchEmbedContents", "embed", "embeddings.create"})
HUNDRED = Decimal(100)
ZERO = Decimal(0)


@dataclass(slots=True)
class Alert:
    id: str
    rule: str
    scope: str
    subject: str | None  # model, or a budget's threshold ("80%")
    period: str
    value: Decimal
    threshold: Decimal
    unit: str  # usd | percent | tokens | calls
    fired_at: float
    expires_at: float = INF  # when the period ends, the alert resolves
    resolved_at: float | None = None
    budget: str | None = None
    model: str | None = None
    call_ids: list[str] = field(default_factory=list)
    notify: tuple[str, ...] = ()
    silent: bool = False  # adopted at restart without a row of its own: writes nothing

    @property
    def key(self) -> tuple[str, str, str | None, str]:
        return (self.rule, self.budget or self.scope, self.subject, self.period)

    def add_call(self, call_id: str) -> bool:
        if len(self.call_ids) < MAX_CALL_IDS and call_id not in self.call_ids:
            self.call_ids.append(call_id)
            return True
        return False

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "rule": self.rule, "scope": self.scope, "budget": self.budget,
                "model": self.model, "subject": self.subject, "period": self.period, "value": self.value,
                "threshold": self.threshold, "unit": self.unit, "fired_at": _iso(self.fired_at),
                "resolved_at": _iso(self.resolved_at), "call_ids": list(self.call_ids)}


def _iso(ts: float | None) -> str | None:
    """UTC ISO 8601 with a Z, as webhooks and the command's environment get it."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def ts_of(call: Call) -> float:
    return call.ts_start.timestamp()


# -- scope matching ------------------------------------------------------------------


class ScopeMatcher:
    """A budget's scope: every named field must match one of its patterns (globs or exact values)."""

    __slots__ = ("fields",)

    def __init__(self, scope: Iterable[tuple[str, tuple[str, ...]]]) -> None:
        self.fields: list[tuple[str, tuple[str, ...], dict[Any, bool]]] = [
            (SCOPE_FIELDS[name], patterns, {}) for name, patterns in scope]

    def __call__(self, call: Call) -> bool:
        for attr, patterns, cache in self.fields:
            value = getattr(call, attr)
            hit = cache.get(value)
            if hit is None:
                text = "" if value is None else str(value)
                hit = value is not None and any(fnmatchcase(text, p) for p in patterns)
                if len(cache) >= MATCH_CACHE:
                    cache.clear()
                cache[value] = hit
            if not hit:
                return False
        return True


# -- budgets ---------------------------------------------------------------------------


class BudgetState:
    __slots__ = ("budget", "matches", "clock", "rolling", "spent", "period", "fired", "limits", "next_limit")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.matches = ScopeMatcher(budget.scope)
        self.rolling = RollingSum(ROLLING_SECONDS[budget.period]) if budget.period in ROLLING_SECONDS else None
        self.clock = None if self.rolling else CalendarClock(budget.period, budget.timezone)
        self.spent = ZERO
        self.period = "rolling" if self.rolling else ""
        self.fired: set[Decimal] = set()
        # Threshold percent -> dollars, worked out once.
        self.limits = [(t, budget.amount_usd * t / HUNDRED) for t in budget.thresholds]
        # The lowest threshold not fired yet, in dollars: one comparison per call.
        self.next_limit = self.limits[0][1]

    def rearm(self) -> None:
        unfired = [limit for t, limit in self.limits if t not in self.fired]
        self.next_limit = min(unfired) if unfired else None

    def ratio(self) -> float:
        return float(self.spent / self.budget.amount_usd)

    def exhausted(self) -> bool:
        return self.spent >= self.budget.amount_usd

    def projected(self, now: float) -> Decimal | None:
        """Spend at the end of the period at the rate so far (rolling: the window's sum is the rate)."""
        if self.rolling is not None:
            return self.spent
        if self.clock is None or not self.clock.start <= now < self.clock.end:
            return None
        elapsed = now - self.clock.start
        if elapsed <= 0:
            return None
        length = self.clock.end - self.clock.start
        return (self.spent * Decimal(length) / Decimal(elapsed)).quantize(Decimal("0.00000001"))


# -- per-scope rule state ------------------------------------------------------------------


class ScopeState:
    __slots__ = ("daily", "baseline", "spike_line", "models", "costs", "p99", "burn", "burn_totals", "embed", "gen",
                 "tokens_day", "surging", "steps")

    def __init__(self) -> None:
        self.daily: dict[int, Decimal] = {}  # day ordinal -> spend (spend_spike)
        self.baseline: tuple[int, Decimal | None] = (-1, None)  # (today, daily average of previous days)
        self.spike_line: Decimal | None = None  # factor x baseline
        self.models: dict[str, float] = {}  # model -> last seen (new_model)
        self.costs: dict[int, list] = {}  # day -> [calls, top-K min-heap] (expensive_call)
        self.p99: tuple[int, Decimal | None] = (-1, None)  # (today, the expensive-call line)
        self.burn: deque[list] = deque()  # [minute start, calls, errors, spending calls] (error_burn)
        self.burn_totals = [0, 0, 0]  # calls, errors, calls that cost something
        self.embed = 0  # embedding / generation tokens of the day (embed_surge)
        self.gen = 0
        self.tokens_day = -1
        self.surging = False
        self.steps: tuple = ()  # the rule steps of this scope's kind


class Engine:
    def __init__(self, settings: AlertSettings, budgets: Iterable[Budget] = (), *,
                 new_id: Callable[[], str] | None = None) -> None:
        self.settings = settings
        self.budgets = [BudgetState(b) for b in budgets]
        self.changes: list[tuple[str, Alert]] = []
        self.firing: dict[tuple, Alert] = {}
        self.muted = False  # rebuilding from the database: state only, no changes
        self.now = -INF
        self.tenants_folded = 0
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self._next_expiry = INF
        self._day = CalendarClock("day", settings.timezone)
        self._today = 0
        self._rules = {name: s for name, s in settings.rules if s.enabled}
        self._scopes: dict[str, ScopeState] = {}
        self._rule_scopes = {name: set(s.scopes) for name, s in self._rules.items()}
        self._want_tenant = any("tenant" in s.scopes for s in self._rules.values())
        self._want_all = any("all" in s.scopes for s in self._rules.values())
        p = {name: dict(s.params) for name, s in self._rules.items()}
        self._p = p
        self._allow = tuple(p.get("new_model", {}).get("allow", ()))
        self._burn_firing: set[str] = set()  # scopes with a firing error_burn
        self._rolling_firing = False
        # Parameters as the hot path uses them, worked out once.
        d = Decimal
        spike, exp, burn = p.get("spend_spike", {}), p.get("expensive_call", {}), p.get("error_burn", {})
        self._spike_factor = d(str(spike.get("factor", 2)))
        self._spike_floor = d(str(spike.get("min_daily_usd", 1)))
        self._max_usd = None if exp.get("max_usd") is None else d(str(exp["max_usd"]))
        self._p99_factor = d(str(exp.get("p99_factor", 10)))
        self._burn_percent = float(burn.get("percent", 20))
        self._burn_window = burn.get("window_minutes", 15) * 60
        self._burn_min = burn.get("min_calls", 10)
        self._embed_min = p.get("embed_surge", {}).get("min_tokens", 0)
        self._new_model_s = p.get("new_model", {}).get("days", 30) * DAY_S
        # Per scope kind, the rule steps that apply, in order.
        steps = (("spend_spike", self._spike), ("new_model", self._new_model), ("expensive_call", self._expensive),
                 ("error_burn", self._burn_add), ("unpriced_model", self._unpriced), ("embed_surge", self._embed))
        self._steps = {kind: tuple(fn for rule, fn in steps if rule in self._rules and kind in self._rule_scopes[rule])
                       for kind in ("all", "tenant")}
        # Budgets by the values of the fields their scopes name: one lookup per
        # call instead of one glob match per budget.
        fields = sorted({attr for b in self.budgets for attr, _, _ in b.matches.fields})
        self._budget_key = attrgetter(*fields) if fields else (lambda call: None)
        self._budget_cache: dict[Any, tuple[BudgetState, ...]] = {}

    # -- the stream ------------------------------------------------------------------

    def observe(self, call: Call) -> None:
        ts = call.ts_start.timestamp()
        if ts > self.now:
            self.now = ts
            if ts >= self._next_expiry:
                self._expire(ts)
        cost = call.cost_usd
        if self.budgets and cost is not None:
            key = self._budget_key(call)
            matched = self._budget_cache.get(key)
            if matched is None:
                if len(self._budget_cache) >= MATCH_CACHE:
                    self._budget_cache.clear()
                matched = self._budget_cache[key] = tuple(s for s in self.budgets if s.matches(call))
            for state in matched:
                self._budget_call(state, call, ts, cost)
        if not self._rules:
            return
        if self._day.place(ts) or self._today == 0:
            self._today = self._day.day_ordinal(ts)
        if self._want_all:
            self._scope_call("all", call, ts, cost)
        tenant = call.tenant
        if tenant and self._want_tenant:
            scope = "tenant=" + tenant
            if scope in self._scopes or len(self._scopes) < MAX_TENANT_SCOPES:
                self._scope_call(scope, call, ts, cost)
            else:
                self.tenants_folded += 1

    def advance(self, now: float) -> None:
        """Time passes without calls: periods end, windows slide, alerts resolve."""
        if now <= self.now:
            return
        self.now = now
        if now >= self._next_expiry:
            self._expire(now)
        for scope in list(self._burn_firing):
            self._burn_check(scope, self._scopes[scope], now, None)
        if self._rolling_firing:
            for state in self.budgets:
                if state.rolling is not None and state.rolling.expire(now):
                    state.spent = state.rolling.total
                    self._rolling_resolve(state, now)

    # -- budgets ---------------------------------------------------------------------------

    def _budget_call(self, state: BudgetState, call: Call, ts: float, cost: Decimal) -> None:
        if state.rolling is not None:
            state.rolling.add(ts, cost)
            state.spent = state.rolling.total
            if state.fired:
                self._rolling_resolve(state, ts)
        else:
            if state.clock.place(ts):
                state.spent = ZERO
                state.fired = set()
                state.period = state.clock.label
                state.rearm()
            state.spent += cost
        spent = state.spent
        if state.next_limit is None or spent < state.next_limit:
            return
        for percent, limit in state.limits:
            if spent >= limit and percent not in state.fired:
                state.fired.add(percent)
                if state.rolling is not None:
                    self._rolling_firing = True
                budget = state.budget
                self._fire(Alert(
                    id="", rule="budget", scope=budget.scope_text, subject=f"{_pct(percent)}%", period=state.period,
                    value=spent, threshold=limit, unit="usd", fired_at=ts,
                    expires_at=INF if state.clock is None else state.clock.end, budget=budget.name,
                    call_ids=[call.id], notify=self._notify(budget.notify)))
        state.rearm()

    def _rolling_resolve(self, state: BudgetState, now: float) -> None:
        still = False
        for percent, limit in state.limits:
            if percent in state.fired:
                if state.spent < limit:
                    state.fired.discard(percent)
                    state.rearm()
                    self._resolve(("budget", state.budget.name, f"{_pct(percent)}%", "rolling"), now)
                else:
                    still = True
        self._rolling_firing = still or any(s.fired for s in self.budgets if s.rolling is not None)

    # -- rules --------------------------------------------------------------------------------

    def _scope_call(self, scope: str, call: Call, ts: float, cost: Decimal | None) -> None:
        state = self._scopes.get(scope)
        if state is None:
            state = self._scopes[scope] = ScopeState()
            state.steps = self._steps["all" if scope == "all" else "tenant"]
        today = self._today
        model = call.model or call.request_model
        for step in state.steps:
            step(scope, state, call, ts, cost, today, model)

    def _day_alert(self, rule: str, scope: str, subject: str | None, ts: float, **kw: Any) -> Alert:
        return Alert(id="", rule=rule, scope=scope, subject=subject, period=self._day.label, fired_at=ts,
                     expires_at=self._day.end, notify=self._notify(self._rule_notify(rule)), **kw)

    def _spike(self, scope: str, state: ScopeState, call: Call, ts: float, cost: Decimal | None, today: int,
               model: str | None) -> None:
        if cost is None:
            return
        p = self._p["spend_spike"]
        daily = state.daily
        total = daily.get(today, ZERO) + cost
        daily[today] = total
        day, baseline = state.baseline
        if day != today:
            days = p["baseline_days"]
            past = [daily[d] for d in range(today - days, today) if d in daily]
            baseline = (sum(past, ZERO) / days) if any(v > 0 for v in past) else None
            state.baseline = (today, baseline)
            state.spike_line = None if baseline is None else baseline * self._spike_factor
            for d in [d for d in daily if d < today - days]:
                del daily[d]
        line = state.spike_line
        if line is None:
            return
        if total > line and total >= self._spike_floor:
            key = ("spend_spike", scope, None, self._day.label)
            alert = self.firing.get(key)
            if alert is None:
                self._fire(self._day_alert("spend_spike", scope, None, ts, value=total,
                                           threshold=line.quantize(Decimal("0.00000001")), unit="usd",
                                           call_ids=[call.id]))
            elif not alert.silent:
                alert.value = total  # the day's running total; written when it resolves

    def spike_figures(self, scope: str) -> tuple[Decimal, Decimal | None] | None:
        """(today's spend, daily baseline) of a scope, for the gauges."""
        state = self._scopes.get(scope)
        if state is None:
            return None
        day, baseline = state.baseline
        return state.daily.get(self._today, ZERO) if day == self._today else ZERO, baseline

    def _new_model(self, scope: str, state: ScopeState, call: Call, ts: float, cost: Decimal | None, today: int,
                   model: str | None) -> None:
        if not model:
            return
        last = state.models.get(model)
        if last is None or ts > last:
            state.models[model] = ts
        if self._allow:  # an allow list replaces "not seen lately"
            if any(fnmatchcase(model, p) for p in self._allow):
                return
        elif last is not None and ts - last <= self._new_model_s:
            return
        self._count_model_call("new_model", scope, model, ts, call)

    def _expensive(self, scope: str, state: ScopeState, call: Call, ts: float, cost: Decimal | None, today: int,
                   model: str | None) -> None:
        if cost is None:
            return
        value = float(cost)
        day, line = state.p99
        if day != today:
            p = self._p["expensive_call"]
            p99 = self._p99(state, today, p["baseline_days"], p["min_baseline_calls"])
            limits = [] if self._max_usd is None else [self._max_usd]
            if p99 is not None:
                limits.append(Decimal(str(p99)) * self._p99_factor)
            line = min(limits) if limits else None
            state.p99 = (today, line)
        day_costs = state.costs.get(today)
        if day_costs is None:
            day_costs = state.costs[today] = [0, []]
        day_costs[0] += 1
        heap = day_costs[1]
        if len(heap) < P99_TOP_K:
            heapq.heappush(heap, value)
        elif value > heap[0]:
            heapq.heapreplace(heap, value)
        if line is None or cost <= line:
            return
        key = ("expensive_call", scope, None, self._day.label)
        alert = self.firing.get(key)
        if alert is None:
            self._fire(self._day_alert("expensive_call", scope, None, ts, value=cost,
                                       threshold=line.quantize(Decimal("0.00000001")), unit="usd", model=model,
                                       call_ids=[call.id]))
        elif not alert.silent and alert.add_call(call.id):
            alert.value = max(alert.value, cost)
            self._change("update", alert)

    @staticmethod
    def _p99(state: ScopeState, today: int, days: int, min_calls: int) -> float | None:
        for d in [d for d in state.costs if d < today - days]:
            del state.costs[d]
        past = [state.costs[d] for d in range(today - days, today) if d in state.costs]
        n = sum(c for c, _ in past)
        if n < max(min_calls, 1):
            return None
        # Nearest rank: the ceil(0.99 n)-th smallest is the (n - rank + 1)-th largest.
        rank_from_top = n - math.ceil(0.99 * n) + 1
        top = heapq.nlargest(rank_from_top, (v for _, heap in past for v in heap))
        return top[-1] if top else None

    def _burn_add(self, scope: str, state: ScopeState, call: Call, ts: float, cost: Decimal | None, today: int,
                  model: str | None) -> None:
        outcome = call.outcome
        error = outcome is Outcome.ERROR or outcome is Outcome.RATE_LIMITED
        spending = 1 if cost else 0  # "while it still spends": calls that cost something
        burn = state.burn
        if burn and burn[-1][0] + 60 > ts:
            bucket = burn[-1]
        else:
            bucket = [ts - ts % 60, 0, 0, 0]
            burn.append(bucket)
            self._burn_expire(state, ts)  # once a minute at most: the window stays bounded
        bucket[1] += 1
        bucket[2] += error
        bucket[3] += spending
        totals = state.burn_totals
        totals[0] += 1
        totals[1] += error
        totals[2] += spending
        # A success cannot start a burn; old minutes leave the totals at the next check.
        if error or scope in self._burn_firing:
            self._burn_check(scope, state, ts, call)

    def _burn_expire(self, state: ScopeState, now: float) -> None:
        horizon = now - self._burn_window
        totals = state.burn_totals
        while state.burn and state.burn[0][0] + 60 <= horizon:
            _, calls, errors, spending = state.burn.popleft()
            totals[0] -= calls
            totals[1] -= errors
            totals[2] -= spending

    def _burn_check(self, scope: str, state: ScopeState, now: float, call: Call | None) -> None:
        self._burn_expire(state, now)
        calls, errors, spending = state.burn_totals
        burning = calls >= self._burn_min and errors * 100 > self._burn_percent * calls and spending > 0
        if burning and scope in self._burn_firing:
            return
        if burning and call is not None:
            key = ("error_burn", scope, None, self._day.label)
            if key not in self.firing:
                percent = Decimal(errors * 100) / Decimal(calls)
                self._fire(self._day_alert("error_burn", scope, None, now, value=percent.quantize(Decimal("0.01")),
                                           threshold=Decimal(str(self._p["error_burn"]["percent"])), unit="percent",
                                           call_ids=[call.id]))
            self._burn_firing.add(scope)
        elif not burning and scope in self._burn_firing:
            alert = next((a for a in self.firing.values() if a.rule == "error_burn" and a.scope == scope), None)
            if alert is not None:
                self._resolve(alert.key, now)
            self._burn_firing.discard(scope)

    def _unpriced(self, scope: str, state: ScopeState, call: Call, ts: float, cost: Decimal | None, today: int,
                  model: str | None) -> None:
        if not call.unpriced:
            return
        self._count_model_call("unpriced_model", scope, model, ts, call)

    def _count_model_call(self, rule: str, scope: str, model: str | None, ts: float, call: Call) -> None:
        """The model rules fire once a day per model and then count its calls."""
        alert = self.firing.get((rule, scope, model, self._day.label))
        if alert is None:
            self._fire(self._day_alert(rule, scope, model, ts, value=Decimal(1), threshold=ZERO,
                                       unit="calls", model=model, call_ids=[call.id]))
        elif not alert.silent:
            alert.value += 1
            if alert.add_call(call.id):
                self._change("update", alert)

    def _embed(self, scope: str, state: ScopeState, call: Call, ts: float, cost: Decimal | None, today: int,
               model: str | None) -> None:
        if state.tokens_day != today:
            state.tokens_day, state.embed, state.gen, state.surging = today, 0, 0, False
        tokens = (call.input_tokens or 0) + (call.output_tokens or 0)
        if not tokens:
            return
        if call.endpoint in EMBED_ENDPOINTS:
            state.embed += tokens
        else:
            state.gen += tokens
        if state.embed <= state.gen and not state.surging:
            return
        key = ("embed_surge", scope, None, self._day.label)
        alert = self.firing.get(key)
        surging = state.embed > state.gen and state.embed >= self._embed_min
        state.surging = surging
        if surging and alert is None:
            self._fire(self._day_alert("embed_surge", scope, None, ts, value=Decimal(state.embed),
                                       threshold=Decimal(state.gen), unit="tokens", call_ids=[call.id]))
        elif surging and not alert.silent:
            alert.value, alert.threshold = Decimal(state.embed), Decimal(state.gen)
        elif not surging and alert is not None:
            alert.value, alert.threshold = Decimal(state.embed), Decimal(state.gen)
            self._resolve(key, ts)

    # -- firing and resolving --------------------------------------------------------------------

    def _rule_notify(self, rule: str) -> tuple[str, ...] | None:
        return self._rules[rule].notify

    def _notify(self, specific: tuple[str, ...] | None) -> tuple[str, ...]:
        return self.settings.notify if specific is None else specific

    def _fire(self, alert: Alert) -> None:
        alert.id = self._new_id()
        self.firing[alert.key] = alert
        if alert.expires_at < self._next_expiry:
            self._next_expiry = alert.expires_at
        self._change("fire", alert)

    def _resolve(self, key: tuple, when: float) -> None:
        alert = self.firing.pop(key, None)
        if alert is None:
            return
        alert.resolved_at = when
        self._change("resolve", alert)

    def _expire(self, now: float) -> None:
        """Resolve every alert whose period ended (at the period's end)."""
        nxt = INF
        for key, alert in list(self.firing.items()):
            if alert.expires_at <= now:
                self.firing.pop(key)
                alert.resolved_at = alert.expires_at
                self._change("resolve", alert)
            elif alert.expires_at < nxt:
                nxt = alert.expires_at
        self._next_expiry = nxt
        for scope in [s for s in self._burn_firing if ("error_burn", s, None, self._day.label) not in self.firing]:
            self._burn_firing.discard(scope)

    def _change(self, kind: str, alert: Alert) -> None:
        if not self.muted and not alert.silent:
            self.changes.append((kind, alert))

    def adopt(self, alert: Alert) -> None:
        """An alert the database says is firing (restart): it is the one for its key."""
        self.firing[alert.key] = alert
        if alert.expires_at < self._next_expiry:
            self._next_expiry = alert.expires_at
        if alert.rule == "error_burn":
            self._burn_firing.add(alert.scope)

    # -- views ------------------------------------------------------------------------------------

    def budget_rows(self, now: float | None = None) -> list[dict[str, Any]]:
        now = self.now if now is None else max(now, self.now)
        rows = []
        for state in self.budgets:
            b = state.budget
            current = state.rolling is not None or (state.clock is not None and state.clock.start <= now
                                                    < state.clock.end)
            spent = state.spent if current else ZERO
            if state.rolling is not None:
                state.rolling.expire(now)
                spent = state.spent = state.rolling.total
            rows.append({
                "budget": b.name, "scope": b.scope_text, "period": b.period,
                "period_label": state.period if current else "",
                "spent_usd": spent, "limit_usd": b.amount_usd,
                "used_percent": (spent * HUNDRED / b.amount_usd).quantize(Decimal("0.01")),
                "projected_usd": state.projected(now) if current else None,
                "thresholds_fired": ",".join(f"{_pct(t)}%" for t in sorted(state.fired)) if current else "",
                "action": b.action,
            })
        return rows


def _pct(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text
