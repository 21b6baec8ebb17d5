"""Is this file a lumen-agent database we may write?  Asked before every write.

A file the agent cannot use must stop it at start with one line, not after
it has logged "capturing" and lost every row at stop:

* not a DuckDB file at all;
* a schema newer than this code knows (writing would corrupt it; ``reprice``
  refuses too);
* a DuckDB file of some other program (tables, no ``lumen_meta``): our
  tables are added only when the user says so (``run --init``);
* a folder the agent cannot write (DuckDB writes a ``.wal`` beside the file).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb

from lumen_agent.errors import LumenError
from lumen_agent.outputs.schema import SCHEMA_VERSION, SchemaError, migrate, schema_version


class DatabaseUnusable(LumenError):
    """The database file cannot be written by this lumen-agent (one line says why)."""


class FutureSchema(DatabaseUnusable, SchemaError):
    """The file was written by a newer lumen-agent: never written by this one."""


# Our own tables and views: a file holding only these is ours.
OWN_OBJECTS = frozenset({"llm_calls", "lumen_meta", "lumen_counters", "calls_by_day", "spend_by_model",
                         "unpriced_models", "alerts"})


def foreign_objects(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = 'main' ORDER BY table_name"
    ).fetchall()
    return [name for (name,) in rows if name not in OWN_OBJECTS]


def prepare(con: duckdb.DuckDBPyConnection, path: Path, *, adopt: bool = False) -> int:
    """Check the open file and bring its schema up to date; returns the version it had.

    Raises :class:`DatabaseUnusable` for a future schema and for another
    program's file (unless ``adopt``)."""
    version = schema_version(con)
    if version > SCHEMA_VERSION:
        raise FutureSchema(
            f"{path} has schema version {version}, newer than this lumen-agent knows ({SCHEMA_VERSION}): "
            "it is not written; upgrade lumen-agent or choose another --db")
    if version == 0 and not adopt:
        foreign = foreign_objects(con)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise DatabaseUnusable(
                f"{path} is a DuckDB file of another program (tables: {shown}); pass --init to add "
                "lumen-agent's tables to it, or choose another --db")
    migrate(con)
    return version


def check_folder(path: Path) -> None:
    """The folder exists (made 0750 if not) and this process can create files in it."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o750, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lumen-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DatabaseUnusable(f"cannot write the database folder {folder}: {exc.strerror or exc}") from None


def describe_open_error(path: Path, exc: BaseException) -> DatabaseUnusable:
    text = " ".join(str(exc).split())
    if "not a valid DuckDB database" in text or "Unsupported storage" in text or "invalid" in text.lower():
        return DatabaseUnusable(f"{path} is not a DuckDB database (or one from an incompatible DuckDB version)")
    return DatabaseUnusable(f"cannot open {path}: {text[:300]}")
