"""The DuckDB schema of a lumen-agent database, and how it is migrated.

Tables
------
``llm_calls``
    One row per LLM API call: exactly the fields of :class:`lumen_agent.pipeline.call.Call`,
    in the same order (DESIGN.md section 3).  Decisions:

    * ``id`` is a plain ``VARCHAR NOT NULL``, **not** a PRIMARY KEY.  A key
      makes DuckDB maintain an ART index on every append (slower flushes, an
      index that lives in memory for the whole file) and turns one duplicate
      into a failed batch.  Ids are random 128-bit values made by the
      pipeline, so uniqueness is by construction; append speed matters more.
    * ``outcome`` is a ``VARCHAR`` holding :class:`~lumen_agent.pipeline.call.Outcome`
      values, not an ENUM.  DuckDB dictionary-compresses low-cardinality
      strings, so storage is the same, and a new outcome never needs a type
      migration (DuckDB cannot ``ALTER TYPE`` an ENUM in place).
    * ``ts_*`` are ``TIMESTAMPTZ`` (UTC instants), ``*_ms`` are ``DOUBLE``,
      token counts are ``BIGINT`` (NULL = not reported, never 0),
      ``cost_usd`` is ``DECIMAL(18,8)`` (NULL = not priced).

``lumen_meta``
    One row per applied schema version (``version``, ``applied_at``,
    ``agent_version``, ``description``).  The schema version of a file is
    ``max(version)``.

``lumen_counters``
    Cumulative counters the agent persists at each flush (``rows_written``,
    ``rows_dropped``, ``lock_conflicts``, and whatever the pipeline counts),
    so users can see from the file alone whether data was lost.

Views: ``calls_by_day``, ``spend_by_model``, ``unpriced_models``.

Migrations
----------
``MIGRATIONS[i]`` takes a file from version ``i`` to ``i + 1`` (version 0 is
an empty file).  Each is literal DDL, frozen once shipped: to change the
schema, append a migration; never edit one that has shipped.  A new column of ``Call`` must be a new *last* field with a
default, added here by ``ALTER TABLE llm_calls ADD COLUMN`` (which appends),
so the table keeps the dataclass order.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from lumen_agent import __version__
from lumen_agent.errors import LumenError
from lumen_agent.pipeline.call import CALL_COLUMNS

CALLS_TABLE = "llm_calls"

# (column, DuckDB type) in the order of the Call dataclass: the table of
# migration 1, then the columns later migrations add.
_V1_COLUMN_TYPES: tuple[tuple[str, str], ...] = (
    ("id", "VARCHAR NOT NULL"),
    ("ts_start", "TIMESTAMPTZ NOT NULL"),
    ("ts_end", "TIMESTAMPTZ NOT NULL"),
    ("latency_ms", "DOUBLE"),
    ("ttft_ms", "DOUBLE"),
    ("host", "VARCHAR"),
    ("pid", "INTEGER"),
    ("process", "VARCHAR"),
    ("exe", "VARCHAR"),
    ("user", "VARCHAR"),
    ("unit", "VARCHAR"),
    ("container_id", "VARCHAR"),
    ("provider", "VARCHAR"),
    ("endpoint", "VARCHAR"),
    ("server_address", "VARCHAR"),
    ("server_port", "INTEGER"),
    ("request_model", "VARCHAR"),
    ("model", "VARCHAR"),
    ("streaming", "BOOLEAN"),
    ("status_code", "INTEGER"),
    ("outcome", "VARCHAR"),
    ("request_id", "VARCHAR"),
    ("input_tokens", "BIGINT"),
    ("output_tokens", "BIGINT"),
    ("cache_read_tokens", "BIGINT"),
    ("cache_write_tokens", "BIGINT"),
    ("cache_write_1h_tokens", "BIGINT"),
    ("reasoning_tokens", "BIGINT"),
    ("cost_usd", "DECIMAL(18,8)"),
    ("price_id", "VARCHAR"),
    ("unpriced", "BOOLEAN"),
    ("usage_missing", "BOOLEAN"),
    ("api_key_hash", "VARCHAR"),
    ("tenant", "VARCHAR"),
    ("feature", "VARCHAR"),
    ("capture", "VARCHAR"),
    ("http_version", "VARCHAR"),
    ("request_body", "VARCHAR"),
    ("response_body", "VARCHAR"),
)
# Migration 3: exact cost.  What the provider said it charged, the token-priced
# figure beside it, and the parts of the bill that are not plain tokens.
_V3_EXACT_COST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("token_cost_usd", "DECIMAL(18,8)"),
    ("charged_usd", "DECIMAL(18,8)"),
    ("service_tier", "VARCHAR"),
    ("web_search_requests", "BIGINT"),
    ("input_audio_tokens", "BIGINT"),
    ("cache_read_audio_tokens", "BIGINT"),
)
# Migration 5: hardening (pipeline/bounds.py, the ingest socket's labels).
_V5_HARDENING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("usage_implausible", "BOOLEAN"),  # every row sets it; NULL on rows from before
    ("sender_uid", "INTEGER"),
)
CALL_COLUMN_TYPES: tuple[tuple[str, str], ...] = (_V1_COLUMN_TYPES + _V3_EXACT_COST_COLUMNS
                                                  + _V5_HARDENING_COLUMNS)

if tuple(name for name, _ in CALL_COLUMN_TYPES) != CALL_COLUMNS:  # pragma: no cover
    raise ImportError("schema.CALL_COLUMN_TYPES is out of step with call.Call")


# Version 1 of llm_calls, frozen as shipped: the table later migrations
# start from.  Never generate this from CALL_COLUMN_TYPES, which grows.
_CALLS_TABLE_V1 = """CREATE TABLE IF NOT EXISTS llm_calls (
    "id" VARCHAR NOT NULL,
    "ts_start" TIMESTAMPTZ NOT NULL,
    "ts_end" TIMESTAMPTZ NOT NULL,
    "latency_ms" DOUBLE,
    "ttft_ms" DOUBLE,
    "host" VARCHAR,
    "pid" INTEGER,
    "process" VARCHAR,
    "exe" VARCHAR,
    "user" VARCHAR,
    "unit" VARCHAR,
    "container_id" VARCHAR,
    "provider" VARCHAR,
    "endpoint" VARCHAR,
    "server_address" VARCHAR,
    "server_port" INTEGER,
    "request_model" VARCHAR,
    "model" VARCHAR,
    "streaming" BOOLEAN,
    "status_code" INTEGER,
    "outcome" VARCHAR,
    "request_id" VARCHAR,
    "input_tokens" BIGINT,
    "output_tokens" BIGINT,
    "cache_read_tokens" BIGINT,
    "cache_write_tokens" BIGINT,
    "cache_write_1h_tokens" BIGINT,
    "reasoning_tokens" BIGINT,
    "cost_usd" DECIMAL(18,8),
    "price_id" VARCHAR,
    "unpriced" BOOLEAN,
    "usage_missing" BOOLEAN,
    "api_key_hash" VARCHAR,
    "tenant" VARCHAR,
    "feature" VARCHAR,
    "capture" VARCHAR,
    "http_version" VARCHAR,
    "request_body" VARCHAR,
    "response_body" VARCHAR
)"""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Migration:
    description: str
    statements: tuple[str, ...]


_VIEWS_V2 = (
    # Spend and volume per UTC day and provider.
    """CREATE OR REPLACE VIEW calls_by_day AS
    SELECT CAST(ts_start AT TIME ZONE 'UTC' AS DATE) AS day,
           provider,
           count(*) AS calls,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           sum(cache_read_tokens) AS cache_read_tokens,
           sum(cache_write_tokens) AS cache_write_tokens,
           sum(cost_usd) AS cost_usd,
           count(*) FILTER (WHERE unpriced) AS unpriced_calls
    FROM llm_calls
    GROUP BY ALL""",
    # All-time spend per provider and model.
    """CREATE OR REPLACE VIEW spend_by_model AS
    SELECT provider,
           model,
           count(*) AS calls,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           sum(cost_usd) AS cost_usd,
           count(*) FILTER (WHERE unpriced) AS unpriced_calls,
           min(ts_start) AS first_seen,
           max(ts_start) AS last_seen
    FROM llm_calls
    GROUP BY ALL""",
    # Models that had tokens but no price row: what `pricing missing` shows.
    """CREATE OR REPLACE VIEW unpriced_models AS
    SELECT provider,
           model,
           count(*) AS calls,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           min(ts_start) AS first_seen,
           max(ts_start) AS last_seen
    FROM llm_calls
    WHERE unpriced
    GROUP BY ALL""",
)

MIGRATIONS: tuple[Migration, ...] = (
    # 0 -> 1
    Migration(
        "calls table and schema history",
        (
            _CALLS_TABLE_V1,
            """CREATE TABLE IF NOT EXISTS lumen_meta (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL,
    agent_version VARCHAR,
    description VARCHAR
)""",
        ),
    ),
    # 1 -> 2
    Migration(
        "counters table and user views",
        (
            """CREATE TABLE IF NOT EXISTS lumen_counters (
    name VARCHAR PRIMARY KEY,
    value BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
)""",
            *_VIEWS_V2,
        ),
    ),
    # 2 -> 3
    Migration(
        "exact cost: charged and token-priced cost, service tier, request fees, audio tokens",
        tuple(f"ALTER TABLE {CALLS_TABLE} ADD COLUMN {_quote(n)} {t}" for n, t in _V3_EXACT_COST_COLUMNS),
    ),
)

# Budgets and alert rules (outputs/alerts): one row per alert, fired and
# resolved.  A self-contained step: it touches no other table.
_ALERTS_TABLE_V1 = """CREATE TABLE IF NOT EXISTS alerts (
    id VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    budget VARCHAR,
    model VARCHAR,
    subject VARCHAR,
    period VARCHAR NOT NULL,
    value DECIMAL(28,8),
    threshold DECIMAL(28,8),
    unit VARCHAR,
    fired_at TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ,
    call_ids VARCHAR[]
)"""

MIGRATIONS += (
    # 3 -> 4
    Migration("alerts table (budgets and alert rules)", (_ALERTS_TABLE_V1,)),
)

MIGRATIONS += (
    # 4 -> 5
    Migration(
        "hardening: usage_implausible and sender_uid columns",
        tuple(f"ALTER TABLE {CALLS_TABLE} ADD COLUMN {_quote(n)} {t}" for n, t in _V5_HARDENING_COLUMNS),
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(LumenError):
    """The file's schema cannot be used by this version of lumen-agent."""


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version of the open database; 0 for a file without one."""
    # A direct query is ~20x cheaper than asking the catalog first, and the
    # store runs this at every flush.
    try:
        return con.execute("SELECT coalesce(max(version), 0) FROM lumen_meta").fetchall()[0][0]
    except duckdb.CatalogException:
        return 0


def migrate(
    con: duckdb.DuckDBPyConnection, target: int = SCHEMA_VERSION
) -> int:
    """Bring the database up to ``target``, one transaction per step.

    Returns the version the file had before.  Raises :class:`SchemaError`
    when the file is newer than this code knows.
    """
    current = schema_version(con)
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema is version {current}, newer than this lumen-agent "
            f"({__version__}) knows (version {SCHEMA_VERSION}); upgrade lumen-agent"
        )
    for version in range(current, target):
        step = MIGRATIONS[version]
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in step.statements:
                con.execute(statement)
            con.execute(
                "INSERT INTO lumen_meta VALUES (?, now(), ?, ?)",
                [version + 1, __version__, step.description],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return current
