"""Export lines: JSON Lines and spreadsheet-safe CSV, shared by `ledger export` and GET /api/export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .reports import EXPORT_FIELDS

THIRD_PARTY_FIELDS = ("email",)
# A cell starting with one of these is run as a formula by spreadsheet programs (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    """Text for one CSV cell; a leading ' keeps spreadsheets from evaluating it."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def fields_for(third_party: bool) -> Sequence[str]:
    return THIRD_PARTY_FIELDS if third_party else EXPORT_FIELDS


def csv_lines(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> Iterator[str]:
    """The header, then one CSV line (with its CRLF) per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(cells: Iterable[str]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(cells)
        return buffer.getvalue()

    yield line(fields)
    for row in rows:
        yield line(safe_cell(row.get(name)) for name in fields)


def jsonl_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One JSON object per line, newline-terminated."""
    for row in rows:
        yield json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n"


def lines(rows: Iterable[dict[str, Any]], fmt: str, *, third_party: bool = False) -> Iterator[str]:
    """Lines of the export in `fmt` ("jsonl" or "csv")."""
    if fmt == "csv":
        return csv_lines(rows, fields_for(third_party))
    if fmt == "jsonl":
        return jsonl_lines(rows)
    raise ValueError(f"format must be jsonl or csv, got {fmt!r}.")
