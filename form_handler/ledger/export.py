"""Export lines: JSON Lines and spreadsheet-safe CSV, shared by `ledger export` and GET /api/export."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from form_handler.ledger.rows import EXPORT_FIELDS

THIRD_PARTY_FIELDS = ("email",)
# A cell starting with one of these is run as a formula by spreadsheet programs (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ExportRows:
    """The rows of one export for a streaming response: the first read up front, the source closed once.

    A response pulls rows in worker threads and its client may go away mid-way; close() may come from
    any thread at any time and never waits: a pull in progress closes the source when it returns.
    """

    def __init__(self, rows: Iterator[dict[str, Any]]) -> None:
        self._rows = rows
        self._lock = threading.Lock()
        self._closed = False
        self._ahead: list[dict[str, Any]] = []

    def prefetch(self) -> None:
        """Read the first row now, so a ledger that cannot be read fails before any response is sent."""
        with self._lock:
            self._ahead = [row for _, row in zip(range(1), self._rows)]

    def __iter__(self) -> ExportRows:
        return self

    def __next__(self) -> dict[str, Any]:
        try:
            with self._lock:
                if self._closed:
                    raise StopIteration
                return self._ahead.pop() if self._ahead else next(self._rows)
        finally:
            if self._closed:
                self.close()  # close() came while we held the lock

    def close(self) -> None:
        """Close the source (its read connection) now, or as soon as the pull in progress returns."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                close = getattr(self._rows, "close", None)  # a generator's close runs its finally
                if close is not None:
                    close()
            finally:
                self._lock.release()


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
