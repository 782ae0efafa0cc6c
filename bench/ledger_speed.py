"""Durable appends per second through the ledger's own API: one per commit, and in batches of 1,000.

    .venv/bin/python -m bench.ledger_speed                              # this checkout, 5 runs (~1 min)
    .venv/bin/python -m bench.ledger_speed --code /tmp/before --runs 7  # and another copy, alternating

Each run is a fresh process on a fresh ledger (real file, WAL, synchronous=FULL: every commit is an fsync) that
first holds `--prefill` consents, then times (wall clock, and the process's CPU time, steadier on a loaded
machine; the fsync of each COMMIT is wall time only): single appends, each its own transaction; batches of 1,000
append_consent calls in one transaction each; and, where the code has it, batches of 1,000 given to one
append_consents call. Consents only (an address on each, flags varied). With --code, the copies of
form_handler named (e.g. `git worktree add /tmp/before HEAD`) run too, in turn with this one, so drift on a
shared machine hits them alike; medians of the runs are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(prefill: int, batches: int, folder: Path) -> dict[str, float]:
    """The measurement, in a process whose form_handler comes first on PYTHONPATH."""
    from form_handler.ledger.sqlite.store import ConsentDraft, Ledger, LedgerTxn

    def draft(i: int) -> ConsentDraft:
        return ConsentDraft("privacy", "a" * 64, "/feedback/", f"Feedback number {i}.", f"p{i}@example.org",
                            True, i % 2 == 0, i % 3 == 0)

    rates: dict[str, float] = {}
    with Ledger(folder / "append.sqlite3") as led:
        for first in range(0, prefill, 1000):
            with led.transaction() as txn:
                for i in range(first, min(first + 1000, prefill)):
                    txn.append_consent(draft(i))
        n = prefill
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n, n + 200):
            with led.transaction() as txn:
                txn.append_consent(draft(i))
        rates["1 per commit"] = 200 / (time.perf_counter() - start)
        rates["1 per commit, CPU us"] = (time.process_time() - cpu) / 200 * 1e6
        n += 200
        for mode in ("append_consent x1000 per commit", "append_consents(1000) per commit"):
            if mode.startswith("append_consents") and not hasattr(LedgerTxn, "append_consents"):
                continue  # older code
            samples, cpus = [], []
            for _ in range(batches):
                drafts = [draft(i) for i in range(n, n + 1000)]
                n += 1000
                start, cpu = time.perf_counter(), time.process_time()
                with led.transaction() as txn:
                    if mode.startswith("append_consents"):
                        txn.append_consents(drafts)
                    else:
                        for d in drafts:
                            txn.append_consent(d)
                samples.append(1000 / (time.perf_counter() - start))
                cpus.append((time.process_time() - cpu) / 1000 * 1e6)
            rates[mode] = statistics.median(samples)
            rates[f"{mode}, CPU us"] = statistics.median(cpus)
        report = led.verify()
        assert report.ok and report.count == n, report
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--code", type=Path, action="append", default=[], help="another copy of the code to compare")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prefill", type=int, default=20_000, help="consents in the ledger before timing")
    parser.add_argument("--batches", type=int, default=3, help="batches of 1,000 timed per mode and run")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.prefill, args.batches, args.child)))
        return
    codes = [ROOT, *args.code]
    results: dict[Path, list[dict[str, float]]] = {code: [] for code in codes}
    print(f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    for _ in range(args.runs):
        for code in codes:
            with tempfile.TemporaryDirectory() as tmp:
                done = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", tmp, "--prefill", str(args.prefill),
                     "--batches", str(args.batches)],
                    env={**os.environ, "PYTHONPATH": str(code)}, capture_output=True, text=True, check=True)
            results[code].append(json.loads(done.stdout.splitlines()[-1]))
    print(f"appends per second (wall) and CPU time of this process per append (us), at {args.prefill:,} consents;"
          f" medians of {args.runs} runs, (lowest-highest); load average now {os.getloadavg()[0]:.2f}")
    modes = list(dict.fromkeys(m for runs in results.values() for r in runs for m in r))
    print(f"{'':34}" + "".join(f"{str(code):>22}" for code in codes))
    for mode in modes:
        cells = []
        for code in codes:
            values = [r[mode] for r in results[code] if mode in r]
            cells.append(f"{statistics.median(values):>14,.0f} ({min(values):,.0f}-{max(values):,.0f})"
                         if values else f"{'-':>22}")
        print(f"{mode:34}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
