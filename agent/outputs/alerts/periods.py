"""Calendar periods (day, ISO week, calendar month) in a time zone, and rolling windows.

Times are epoch seconds (floats).  :class:`CalendarClock` caches the current
period's bounds, so placing a call in its period costs two comparisons until
the period changes (then one ``zoneinfo`` conversion).
"""

from __future__ import annotations

from collections import deque
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

ROLLING_SECONDS = {"24h": 86_400, "7d": 7 * 86_400}
# Rolling windows keep sums per bucket of this many seconds: memory is
# window / bucket per budget (2 016 buckets for 7 days), and a call leaves the
# window at most this much late.
ROLLING_BUCKET_S = 300


def period_bounds(period: str, zone: ZoneInfo, ts: float) -> tuple[float, float, str]:
    """[start, end) of the calendar period holding ``ts``, and its label (2026-11-29, 2026-W48, 2026-11)."""
    local = datetime.fromtimestamp(ts, zone)
    day = local.date()
    if period == "day":
        first, after, label = day, day + timedelta(days=1), day.isoformat()
    elif period == "week":
        first = day - timedelta(days=day.weekday())
        after = first + timedelta(days=7)
        iso = first.isocalendar()
        label = f"{iso.year}-W{iso.week:02d}"
    elif period == "month":
        first = day.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
        label = f"{first.year}-{first.month:02d}"
    else:
        raise ValueError(period)
    return _midnight(first, zone), _midnight(after, zone), label


def _midnight(d: date, zone: ZoneInfo) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()


class CalendarClock:
    """Which calendar period a time falls in; ``place`` returns True when the period changed."""

    __slots__ = ("period", "zone", "start", "end", "label")

    def __init__(self, period: str, zone: str) -> None:
        self.period = period
        self.zone = ZoneInfo(zone)
        self.start = self.end = float("-inf")
        self.label = ""

    def place(self, ts: float) -> bool:
        if self.start <= ts < self.end:
            return False
        self.start, self.end, self.label = period_bounds(self.period, self.zone, ts)
        return True

    def day_ordinal(self, ts: float) -> int:
        """The local date's ordinal (days of a 'day' clock)."""
        return datetime.fromtimestamp(ts, self.zone).date().toordinal()


class RollingSum:
    """Sum of amounts over the last ``seconds``, in buckets of ``ROLLING_BUCKET_S``."""

    __slots__ = ("seconds", "buckets", "total")

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.buckets: deque[list] = deque()  # [bucket_start, amount]
        self.total = Decimal(0)

    def add(self, ts: float, amount: Decimal) -> None:
        start = ts - ts % ROLLING_BUCKET_S
        if self.buckets and self.buckets[-1][0] == start:
            self.buckets[-1][1] += amount
        elif self.buckets and self.buckets[-1][0] > start:
            # Late call (an earlier bucket): counted in the newest bucket, so
            # it leaves the window a little late rather than never.
            self.buckets[-1][1] += amount
        else:
            self.buckets.append([start, amount])
        self.total += amount
        self.expire(ts)

    def expire(self, now: float) -> bool:
        """Drop buckets that left the window; True when any did."""
        horizon = now - self.seconds
        dropped = False
        while self.buckets and self.buckets[0][0] + ROLLING_BUCKET_S <= horizon:
            self.total -= self.buckets.popleft()[1]
            dropped = True
        if not self.buckets:
            self.total = Decimal(0)
        return dropped
