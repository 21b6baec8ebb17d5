"""One renderer for every command that prints rows: ``--format table|json|csv``.

Values keep their exact meaning in every format: decimals are printed with
all their digits and never pass through a float, timestamps are ISO 8601,
NULL is ``null`` in JSON, an empty field in CSV and blank in a table.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import math
import sys
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TextIO


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def render(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    fmt: Format | str = Format.TABLE,
    out: TextIO | None = None,
) -> None:
    out = sys.stdout if out is None else out
    fmt = Format(fmt)
    if fmt is Format.JSON:
        _render_json(columns, rows, out)
    elif fmt is Format.CSV:
        _render_csv(columns, rows, out)
    else:
        _render_table(columns, rows, out)


# -- scalars -------------------------------------------------------------


def text(value: Any) -> str:
    """A value as plain text (CSV fields and table cells); NULL is ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple, dict)):
        return _json(value)
    return str(value)


def _json(value: Any) -> str:
    """Exact JSON text of a value: Decimals become number literals with all
    their digits (json.dumps would go through float)."""
    if value is None or isinstance(value, (bool, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value) if math.isfinite(value) else "null"
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    if isinstance(value, uuid.UUID):
        return json.dumps(str(value))
    return json.dumps(text(value), ensure_ascii=False)


# -- formats -------------------------------------------------------------


def _render_json(columns: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO) -> None:
    keys = [json.dumps(c, ensure_ascii=False) for c in columns]
    objects = [
        "{" + ", ".join(f"{k}: {_json(v)}" for k, v in zip(keys, row, strict=False)) + "}" for row in rows
    ]
    out.write("[" + ",\n ".join(objects) + "]\n")


def _render_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([text(v) for v in row])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _render_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    rows = list(rows)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i, name in enumerate(columns):
        numeric = any(_is_number(r[i]) for r in rows) and all(
            r[i] is None or _is_number(r[i]) for r in rows
        )
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*(text(v) for v in row))
    interactive = out.isatty() if hasattr(out, "isatty") else False
    if interactive:
        Console(file=out, highlight=False, markup=False, emoji=False).print(table)
        return
    # Not a terminal: never squeeze or cut columns to 80 characters, no
    # colour, no trailing blanks.
    buffer = io.StringIO()
    Console(
        file=buffer,
        width=100_000,
        highlight=False,
        markup=False,
        emoji=False,
        color_system=None,
    ).print(table, crop=False, soft_wrap=False)
    out.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
