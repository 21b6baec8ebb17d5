"""What the command line needs of the read side before any query runs:
the report's ``--by`` dimensions (its help lists them) and the read side's
error.  Apart from ``queries`` so that every command, ``run`` and ``status``
included, starts without importing DuckDB (~0.12 s).
"""

from __future__ import annotations

from lumen_agent.errors import LumenError


class QueryError(LumenError):
    """A user-facing error: bad SQL, missing file, bad --since, lock timeout."""


REPORT_KEYS: dict[str, tuple[str, str]] = {
    # --by value: (SQL expression, output column)
    "model": ("model", "model"),
    "process": ("process", "process"),
    "provider": ("provider", "provider"),
    "day": ("CAST(ts_start AT TIME ZONE 'UTC' AS DATE)", "day"),
    "key": ("api_key_hash", "api_key_hash"),
    "tenant": ("tenant", "tenant"),
}
