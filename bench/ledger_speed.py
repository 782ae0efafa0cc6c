"""Ledger speed on this machine: durable appends per second (one per commit, and batched) and verify rate.

    .venv/bin/python -m bench.ledger_speed [--entries 100000] [--dir /tmp]

Uses real files with the ledger's pragmas (WAL, synchronous=FULL): every commit is an fsync.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from form_handler.ledger.sqlite.store import ConsentDraft, Ledger


def draft(i: int) -> ConsentDraft:
    return ConsentDraft("privacy", "a" * 64, "/feedback/", f"Feedback number {i}.", f"p{i}@example.org",
                        True, i % 2 == 0, i % 3 == 0)


def appends_per_second(folder: Path, total: int, per_commit: int) -> float:
    with Ledger(folder / f"append-{per_commit}.sqlite3") as led:
        start = time.perf_counter()
        for first in range(0, total, per_commit):
            with led.transaction() as txn:
                for i in range(first, first + per_commit):
                    txn.append_consent(draft(i))
        return total / (time.perf_counter() - start)


def verify_rate(folder: Path, entries: int) -> tuple[float, float]:
    path = folder / "verify.sqlite3"
    with Ledger(path) as led:
        for first in range(0, entries, 1000):
            with led.transaction() as txn:
                for i in range(first, min(first + 1000, entries)):
                    txn.append_consent(draft(i))
        led.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        best = best_chain = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            report = led.verify()
            best = min(best, time.perf_counter() - start)
            assert report.ok and report.count == entries
        # Walking the chain alone (no column or personal-data checks), for comparison.
        from form_handler.ledger.chain import walk
        with led._reading() as conn:
            for _ in range(3):
                start = time.perf_counter()
                walk(conn.execute("SELECT seq, hash, canonical FROM entries ORDER BY seq"))
                best_chain = min(best_chain, time.perf_counter() - start)
    return entries / best, entries / best_chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        print(f"appends/s, one per commit:   {appends_per_second(folder, 500, 1):,.0f}")
        print(f"appends/s, 100 per commit:   {appends_per_second(folder, 10_000, 100):,.0f}")
        full, chain = verify_rate(folder, args.entries)
        print(f"verify, {args.entries:,} entries:  {full:,.0f} entries/s (hash chain alone: {chain:,.0f}/s)")


if __name__ == "__main__":
    main()
