"""``lumen-agent top``: the running agent's spend, live, in the terminal.

As rich's ``top_lite_simulator`` example: :func:`build_view` is a pure
function from a snapshot (the agent's control op ``snapshot``, see
:mod:`lumen_agent.outputs.live`) and a terminal size to a renderable; :func:`run`
only fetches a snapshot every second and shows it with ``rich.live.Live``.

The view fits any terminal: it always shows its title line, then as much as
the size allows, dropping in this order the tenant and provider tables, the
latest calls, the model table, the process table (columns go first:
optional ones are dropped from narrow tables).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from lumen_agent.errors import LumenError
from lumen_agent.outputs.live import WINDOWS

KEYS: dict[str, int] = {"1": 60, "2": 300, "3": 3600, "4": 86400}
WINDOW_TITLES: dict[int, str] = {60: "last minute", 300: "last 5 minutes", 3600: "last hour",
                                 86400: "last 24 hours"}
WINDOW_BY_LABEL: dict[str, int] = {label: seconds for seconds, label in WINDOWS.items()}
REFRESH_S = 1.0
# Below this width the top tables are stacked instead of paired side by side.
WIDE = 100
DIMENSION_TITLES = {"process": "PROCESS", "model": "MODEL", "provider": "PROVIDER", "tenant": "TENANT"}


# -- formatting ---------------------------------------------------------------


def usd(value: Decimal | str | None) -> str:
    """Dollars, readable and never rounded to zero: $1,234.50, $0.50, $0.02322, $0.000387."""
    if value is None:
        return "-"
    d = Decimal(value)
    if d == 0:
        return "$0"
    sign = "-" if d < 0 else ""
    d = abs(d)
    if d >= 1:
        return f"{sign}${d.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    # Four significant digits, at least two decimals.
    d = d.quantize(Decimal(1).scaleb(d.adjusted() - 3), ROUND_HALF_UP).normalize()
    if d.as_tuple().exponent > -2:
        d = d.quantize(Decimal("0.01"))
    return f"{sign}${d:f}"


def count(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 100_000:
        return f"{n:,}"
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{unit}" if n < size * 100 else f"{n / size:.0f}{unit}"
    return str(n)


def per_second(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}/s"
    if x >= 1:
        return f"{x:.1f}/s"
    return f"{x:.2f}/s"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f}ms" if ms < 10_000 else f"{ms / 1000:.1f}s"


def clock(ts: float | None) -> str:
    return "--:--:--" if ts is None else time.strftime("%H:%M:%S", time.localtime(ts))


# -- the view (pure) ------------------------------------------------------------


def _line(*parts: str | tuple[str, str]) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for part in parts:
        if isinstance(part, tuple):
            text.append(*part)
        else:
            text.append(part)
    return text


def _title_line(snapshot: dict[str, Any] | None, window: int, width: int) -> Text:
    left = _line(("lumen-agent top", "bold"), "  ", (WINDOW_TITLES[window], "bold cyan"))
    if snapshot is not None:
        left.append(f"  {clock(snapshot.get('now'))}")
    keys = Text(no_wrap=True, end="")
    for key, seconds in KEYS.items():
        keys.append(f" {key}", "bold")
        keys.append(f" {WINDOWS[seconds]} ", "reverse" if seconds == window else "")
    keys.append(" q", "bold")
    keys.append(" quit")
    gap = width - left.cell_len - keys.cell_len
    if gap >= 2:
        left.append(" " * gap)
        left.append_text(keys)
    return left


def _rates_line(snapshot: dict[str, Any]) -> Text:
    rate = snapshot.get("rate", {})
    return _line("spend ", (f"{usd(rate.get('cost_per_min'))}/min", "bold"),
                 "  ", (f"{usd(rate.get('cost_per_hour'))}/h", "bold"),
                 f"   calls {per_second(rate.get('calls_per_s', 0.0))}",
                 f"   tokens {per_second(rate.get('tokens_per_s', 0.0))}",
                 ("   (last minute)", "dim"))


def _totals_line(snapshot: dict[str, Any], window: int) -> Text:
    totals = snapshot.get("totals", {})
    unpriced = totals.get("unpriced", 0)
    calls = totals.get("calls", 0)
    return _line(f"{WINDOWS[window]} window: ", (usd(totals.get("cost")), "bold"),
                 f"  {count(calls)} call{'' if calls == 1 else 's'}",
                 f"  {count(totals.get('tokens'))} tokens  ",
                 (f"{count(unpriced)} unpriced", "bold yellow" if unpriced else ""))


def _health_line(health: dict[str, Any]) -> Text:
    if not health:
        return _line(("agent: waiting for its first status", "dim"))

    def counter(name: str, key: str, bad: bool = True) -> tuple[str, str]:
        value = health.get(key) or 0
        return (f"{name} {count(value)}", "bold red" if bad and value else "")

    return _line(f"agent pid {health.get('pid')} up {duration(health.get('uptime_s'))}  ",
                 f"events {count(health.get('events'))}  ", counter("lost", "lost"), "  ",
                 counter("truncated", "truncated"), "  ", counter("rows dropped", "rows_dropped"), "  ",
                 f"pending {count(health.get('rows_pending'))}  ", counter("skipped", "skipped", bad=False))


@dataclass(frozen=True, slots=True)
class _Column:
    key: str
    header: str
    justify: str = "left"
    # A flexible column gets what room is left and is cut with an ellipsis; while
    # columns are chosen it claims its longest cell, at most ``claim``.  Other
    # columns always get their longest cell.
    flexible: bool = False
    claim: int = 0


_TOP_COLUMNS = (  # in the order they are given room; shown in this order too
    _Column("name", "", flexible=True, claim=20),
    _Column("cost", "COST", "right"),
    _Column("calls", "CALLS", "right"),
    _Column("tokens", "TOKENS", "right"),
)
_LATEST_ORDER = ("time", "process", "pid", "provider", "model", "in", "out", "cost", "latency", "outcome")
_LATEST_COLUMNS = (  # in the order they are given room
    _Column("process", "PROCESS", flexible=True, claim=15),
    _Column("model", "MODEL", flexible=True, claim=22),
    _Column("cost", "COST", "right"),
    _Column("time", "TIME"),
    _Column("outcome", "OUTCOME"),
    _Column("latency", "LATENCY", "right"),
    _Column("in", "IN", "right"),
    _Column("out", "OUT", "right"),
    _Column("provider", "PROVIDER"),
    _Column("pid", "PID", "right"),
)
_OUTCOME_STYLE = {"success": "green", "rate_limited": "yellow", "cancelled": "yellow"}


def _need(column: _Column, rows: list[dict[str, Any]]) -> int:
    return max([cell_len(column.header)] + [_cell_len(r[column.key]) for r in rows])


def _cell_len(value: str | Text) -> int:
    return value.cell_len if isinstance(value, Text) else cell_len(value)


def _fit(columns: Sequence[_Column], width: int, rows: list[dict[str, Any]]) -> list[_Column]:
    """The columns of ``rows`` that fit in ``width`` (each with a gap), given room in priority order."""
    chosen: list[_Column] = []
    used = -1
    for column in columns:
        need = _need(column, rows)
        if column.flexible:
            need = min(need, column.claim)
        if used + need + 1 <= width or not chosen:
            chosen.append(column)
            used += need + 1
    return chosen


def _flexible_widths(columns: Sequence[_Column], rows: list[dict[str, Any]], width: int) -> dict[str, int]:
    """Room for the flexible columns: what the others leave, shared out so short ones keep their cells."""
    flexible = sorted((c for c in columns if c.flexible), key=lambda c: _need(c, rows))
    room = width - (len(columns) - 1) - sum(_need(c, rows) for c in columns if not c.flexible)
    widths: dict[str, int] = {}
    for i, column in enumerate(flexible):
        share = max(1, min(_need(column, rows), room // (len(flexible) - i)))
        widths[column.key] = share
        room -= share
    return widths


def _table(columns: Sequence[_Column], rows: list[dict[str, Any]], empty: str, width: int) -> Table:
    if not rows:
        rows = [{c.key: Text(empty, style="dim") if i == 0 else "" for i, c in enumerate(columns)}]
    widths = _flexible_widths(columns, rows, width)
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False, header_style="bold reverse")
    for column in columns:
        table.add_column(column.header, justify=column.justify, no_wrap=True, overflow="ellipsis",
                         width=widths.get(column.key))
    for row in rows:
        table.add_row(*(row[c.key] for c in columns))
    return table


@dataclass(slots=True)
class _Block:
    """Some tables shown side by side; each line is one row of every table."""

    name: str
    rows: int  # data rows it would like (1 for its "nothing" line)
    make: Callable[[int, int], RenderableType]  # (data rows, width) -> renderable
    shown: int = 0

    @property
    def min_lines(self) -> int:
        return 1 + min(self.rows, 2)  # header + up to two rows

    @property
    def max_lines(self) -> int:
        return 1 + self.rows


def _entry_cost(entry: dict[str, Any]) -> Text | str:
    """Its cost; "unpriced" when no call of it had a price, "≥" before a sum missing some."""
    unpriced = entry.get("unpriced", 0)
    if unpriced and unpriced >= entry.get("calls", 0):
        return Text("unpriced", "yellow")
    if unpriced:
        return Text("≥" + usd(entry["cost"]), "yellow")
    return usd(entry["cost"])


def _top_block(snapshot: dict[str, Any], dims: Sequence[str]) -> _Block:
    tops = snapshot.get("top", {})

    def make(lines: int, width: int) -> RenderableType:
        each = width if len(dims) == 1 else (width - 2 * (len(dims) - 1)) // len(dims)
        tables = []
        for dim in dims:
            rows = [{"name": e["name"], "cost": _entry_cost(e), "calls": count(e["calls"]),
                     "tokens": count(e["tokens"])} for e in tops.get(dim, [])[:lines]]
            columns = [replace(c, header=DIMENSION_TITLES[dim]) if c.key == "name" else c for c in _TOP_COLUMNS]
            columns = _fit(columns, each, rows)
            tables.append(_table(columns, rows, "no calls", each))
        if len(tables) == 1:
            return tables[0]
        grid = Table.grid(expand=True, padding=(0, 2, 0, 0))
        for _ in tables:
            grid.add_column(ratio=1)
        grid.add_row(*tables)
        return grid

    rows = max([len(tops.get(dim, [])) for dim in dims] + [1])
    return _Block("+".join(dims), rows, make)


def _latest_block(snapshot: dict[str, Any]) -> _Block:
    latest = snapshot.get("latest", [])

    def make(lines: int, width: int) -> RenderableType:
        rows = []
        for call in latest[:lines]:
            outcome = call.get("outcome") or "-"
            rows.append({
                "time": clock(call.get("ts")),
                "process": call.get("process") or "-",
                "pid": str(call.get("pid") or "-"),
                "provider": call.get("provider") or "-",
                "model": call.get("model") or "-",
                "in": count(call.get("input_tokens")),
                "out": count(call.get("output_tokens")),
                "cost": usd(call["cost"]) if call.get("cost") is not None else Text("unpriced", "yellow"),
                "latency": latency(call.get("latency_ms")),
                "outcome": Text(outcome, _OUTCOME_STYLE.get(outcome, "red")),
            })
        chosen = {c.key: c for c in _fit(_LATEST_COLUMNS, width, rows)}
        columns = [chosen[key] for key in _LATEST_ORDER if key in chosen]
        # Name the table in its first header: LATEST above the times, or before the first column.
        first = columns[0]
        columns[0] = replace(first, header="LATEST" if first.key == "time" else f"LATEST {first.header}")
        return _table(columns, rows, "no calls yet", width)

    return _Block("latest", max(len(latest), 1), make)


_ALERT_COLUMNS = (
    _Column("name", "BUDGETS & ALERTS", flexible=True, claim=30),
    _Column("used", "USED", "right"),
    _Column("of", "OF", "right"),
    _Column("note", "STATE", flexible=True, claim=30),
)


def _plain(value: Any) -> str:
    return format(Decimal(value).normalize(), "f")


def _alerts_block(snapshot: dict[str, Any]) -> _Block:
    """Each budget (spent of its amount, thresholds fired), then each firing alert."""
    alerts = snapshot.get("alerts") or {}
    rows: list[dict[str, Any]] = []
    for b in alerts.get("budgets") or []:
        fired = b.get("thresholds_fired") or ""
        rows.append({"name": f"budget {b['budget']} ({b['period']})", "used": usd(b["spent_usd"]),
                     "of": usd(b["limit_usd"]),
                     "note": Text(f"{b['used_percent']}% fired {fired}", "red") if fired else f"{b['used_percent']}%"})
    for a in alerts.get("firing") or []:
        about = a.get("budget") or a.get("scope") or ""
        subject = a.get("model") or a.get("subject") or ""
        money = a.get("unit") == "usd"
        rows.append({"name": Text(f"{a['rule']} {about} {subject}".strip(), "bold red"),
                     "used": usd(a["value"]) if money else _plain(a["value"]),
                     "of": usd(a["threshold"]) if money else _plain(a["threshold"]),
                     "note": Text("firing since " + clock(a.get("fired_at")), "red")})

    def make(lines: int, width: int) -> RenderableType:
        shown = rows[:lines]
        return _table(_fit(_ALERT_COLUMNS, width, shown), shown, "no budgets or alerts", width)

    return _Block("alerts", max(len(rows), 1), make)


def build_view(snapshot: dict[str, Any] | None, window: int, width: int, height: int, *,
               notice: str | None = None) -> RenderableType:
    """The whole screen for ``snapshot`` in a terminal of ``width`` x ``height``.

    ``snapshot`` is what the agent's ``snapshot`` op returned (None: nothing
    yet); ``notice`` is a problem to show in place of the agent's health (the
    agent stopped answering; the figures are then the last ones it sent).
    """
    width, height = max(width, 1), max(height, 1)
    lines: list[Text] = [_title_line(snapshot, window, width)]
    if notice:
        lines.append(_line((notice, "bold red")))
    if snapshot is not None:
        lines.append(_rates_line(snapshot))
        lines.append(_totals_line(snapshot, window))
        if not notice:
            lines.append(_health_line(snapshot.get("health") or {}))
    header_lines = 4 if height >= 20 else 3 if height >= 14 else 2 if height >= 6 else 1
    lines = lines[:header_lines]
    parts: list[RenderableType] = list(lines)
    if snapshot is None:
        return Group(*parts)

    wide = width >= WIDE
    if wide:
        pair1, pair2 = _top_block(snapshot, ("process", "model")), _top_block(snapshot, ("provider", "tenant"))
        latest = _latest_block(snapshot)
        display, by_need, by_room = [pair1, pair2, latest], [pair1, latest, pair2], [pair1, pair2, latest]
    else:
        process, model, provider, tenant = (_top_block(snapshot, (d,)) for d in DIMENSION_TITLES)
        latest = _latest_block(snapshot)
        display = [process, model, provider, tenant, latest]
        by_need = [process, model, latest, provider, tenant]
        by_room = [process, model, provider, tenant, latest]

    if snapshot.get("alerts"):  # budgets and firing alerts: right after the first tables
        block = _alerts_block(snapshot)
        display.append(block)
        by_need.insert(1, block)
        by_room.insert(1, block)

    room = height - len(lines)
    chosen: set[str] = set()
    for block in by_need:  # each block: a blank line, its header, a first few rows
        if block.min_lines + 1 <= room:
            block.shown = block.min_lines
            room -= block.min_lines + 1
            chosen.add(block.name)
    for block in by_room:  # then the rest of their rows, as long as there is room
        if block.name in chosen:
            more = min(block.max_lines - block.shown, room)
            block.shown += more
            room -= more
    for block in display:
        if block.name in chosen:
            parts.append(Text(""))
            parts.append(block.make(block.shown - 1, width))
    return Group(*parts)


# -- the live loop ---------------------------------------------------------------


class AgentUnreachable(LumenError):
    """No snapshot: the message is one line for the user."""


def fetch(socket_path: Path, window: int, timeout: float = 2.0) -> dict[str, Any]:
    from lumen_agent.control import request

    try:
        return request(socket_path, "snapshot", timeout=timeout, window=window)
    except PermissionError:
        raise AgentUnreachable(f"cannot talk to the agent at {socket_path}: permission denied "
                               "(its socket is for the agent's own user; run top as that user)") from None
    except (FileNotFoundError, ConnectionRefusedError):
        raise AgentUnreachable(f"no lumen-agent is running (nothing answers at {socket_path})") from None
    except TimeoutError:
        raise AgentUnreachable(f"the agent at {socket_path} did not answer within {timeout:g} s") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or errno.errorcode.get(exc.errno or 0, "error")
        raise AgentUnreachable(f"the agent at {socket_path} did not give a snapshot: {reason}") from None
    except ValueError:
        raise AgentUnreachable(f"the agent at {socket_path} sent a reply that is not JSON") from None


def print_once(socket_path: Path, window: int, console: Console | None = None) -> int:
    """``top --once``: one snapshot, rendered; 1 with one line on stderr when no agent answers."""
    console = console or Console()
    try:
        snapshot = fetch(socket_path, window)
    except AgentUnreachable as exc:
        print(exc, file=sys.stderr)
        return 1
    # In a terminal, fit it; in a pipe or file, show everything.
    height = console.height if console.is_terminal else 1000
    console.print(build_view(snapshot, window, console.width, height))
    return 0


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns, size.lines


def run(socket_path: Path, window: int) -> int:
    """The interactive view until q, Ctrl-C, SIGTERM or the terminal goes away."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("error: top needs a terminal; use `lumen-agent top --once` for one snapshot", file=sys.stderr)
        return 2
    try:
        snapshot: dict[str, Any] | None = fetch(socket_path, window)
    except AgentUnreachable as exc:
        print(exc, file=sys.stderr)
        return 1

    stdin = sys.stdin.fileno()
    out = sys.stdout.fileno()
    console = Console()
    saved_tty = termios.tcgetattr(stdin)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)

    def on_resize(_signum: int, _frame: object) -> None:
        try:
            os.write(wake_w, b"r")
        except OSError:
            pass

    def on_terminate(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    saved_signals = {sig: signal.signal(sig, handler) for sig, handler in
                     ((signal.SIGWINCH, on_resize), (signal.SIGTERM, on_terminate), (signal.SIGHUP, on_terminate))}
    from rich.live import Live

    try:
        tty.setcbreak(stdin, termios.TCSANOW)
        with Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                  redirect_stderr=False) as live:
            lost_since: float | None = None  # when the agent stopped answering
            notice: str | None = None
            next_fetch = time.monotonic() + REFRESH_S
            dirty = True
            while True:
                if time.monotonic() >= next_fetch:
                    try:
                        snapshot = fetch(socket_path, window, timeout=REFRESH_S)
                        lost_since = notice = None
                    except AgentUnreachable as exc:
                        lost_since = lost_since or time.time()
                        notice = f"agent gone since {clock(lost_since)}, figures frozen, retrying: {exc}"
                    next_fetch = time.monotonic() + REFRESH_S
                    dirty = True
                if dirty:
                    width, height = _terminal_size(out)
                    console.size = (width, height)
                    live.update(build_view(snapshot, window, width, height, notice=notice), refresh=True)
                    dirty = False
                ready, _, _ = select.select([stdin, wake_r], [], [], max(0.0, next_fetch - time.monotonic()))
                if wake_r in ready:
                    while True:
                        try:
                            if not os.read(wake_r, 64):
                                break
                        except BlockingIOError:
                            break
                    dirty = True
                if stdin in ready:
                    keys = os.read(stdin, 64)
                    if not keys:  # the terminal went away
                        return 0
                    for key in keys.decode("utf-8", "replace"):
                        if key in ("q", "Q"):
                            return 0
                        if key in KEYS and KEYS[key] != window:
                            window = KEYS[key]
                            next_fetch = 0.0  # the new window's figures now
                            dirty = True
    except KeyboardInterrupt:
        return 0
    finally:
        try:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved_tty)
        except termios.error:
            pass
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)
