"""`ledger verify` on every core: ranges of entries checked at once, merged as the one-process reference would.

An entry's checks need only its own row, its personal data and the stored hash of the entry before it
(verify_range.py checks a range). The caller fixes [1, N] from one snapshot; worker processes, each with its
own read-only connection, are handed the next unchecked range while the caller checks ranges too; the results
merge so that the smallest bad seq wins, with the sentences and tie order of the reference below (chain.walk,
then reports.first_broken_link, first_column_mismatch, first_commitment_mismatch). The reference still verifies
a ledger whose `entries` table is not the one the schema made (rebuilt by hand, seq not its rowid).

Processes, not threads: SQLite takes one process-wide mutex on every allocation (its memory statistics) and a
range's hashing holds the GIL, so two threads mostly wait for each other. The workers are started as
`python -c "from form_handler.ledger.sqlite.verify import serve; serve()"`, not with multiprocessing, whose spawn would
import (run) the caller's main script again in each.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from form_handler.ledger.sqlite import reports
from form_handler.ledger.sqlite.children import start_python
from form_handler.ledger.chain import (
    GENESIS, ZERO_CHECKPOINT_PROBLEM, Checkpoint, VerifyReport, WalkResult, removed_problem, rewritten_problem, walk,
)
from form_handler.ledger.sqlite.schema import configure
from form_handler.ledger.sqlite.verify_range import RangeResult, check_range, hash_at, personal_keyed

# Entries per range: a range's values are held in memory while it is checked (~1 kB an entry), so memory
# stays constant.
RANGE_ROWS = 4096
# Below this many entries the calling process alone is quicker than starting others (~0.1 s each).
PARALLEL_MIN_ENTRIES = 50_000


@dataclass(frozen=True)
class Outcome:
    report: VerifyReport
    processes: int  # processes that checked ranges, the caller's included
    exact_rows: int  # rows checked row by row (a range with a problem, or a shape verify_range._SHAPES lacks)


def verify(conn: apsw.Connection, path: Path, against: Checkpoint | None = None, *,
           workers: int | None = None, range_rows: int | None = None) -> Outcome:
    """Verify the ledger at `path` as `conn` (inside a read transaction on it) sees it, in `workers` processes.

    By default one per CPU from PARALLEL_MIN_ENTRIES entries on, else this process alone.
    """
    if not _standard_table(conn):
        return Outcome(reference(conn, against), 1, 0)
    found: Any = conn.execute("SELECT max(seq) FROM entries").fetchall()
    count = int(found[0][0] or 0)
    size = range_rows or RANGE_ROWS
    ranges = [(first, min(first + size - 1, count)) for first in range(1, count + 1, size)]
    if workers is None:
        workers = _cpus() if count >= PARALLEL_MIN_ENTRIES else 1
    results, processes = _check_ranges(conn, path, ranges, max(1, min(workers, len(ranges))), personal_keyed(conn))
    ordered = [results[i] for i in sorted(results)]
    walked = _walk(ordered, count, against, lambda seq: hash_at(conn, seq))
    others = [r.other for r in ordered if r.other is not None]
    report = _report(walked, min(others) if others else None, against)
    return Outcome(report, processes, sum(r.exact_rows for r in ordered))


def reference(conn: apsw.Connection, against: Checkpoint | None = None) -> VerifyReport:
    """The one-process verify this module must agree with: the walk, then the three column and data checks."""
    walked = walk(conn.execute("SELECT seq, hash, canonical FROM entries ORDER BY seq"), against)
    bad, problem = walked.bad_seq, walked.problem
    for other in (reports.first_broken_link(conn), reports.first_column_mismatch(conn),
                  reports.first_commitment_mismatch(conn)):
        if other is not None and (bad is None or other[0] < bad):
            bad, problem = other
    return VerifyReport(ok=bad is None, count=walked.count, head=walked.head, sqlite_version=apsw.sqlite_lib_version(),
                        first_bad_seq=bad, problem=problem, against=against)


def _standard_table(conn: apsw.Connection) -> bool:
    # Ranges by seq need seq to be the rowid (unique integers, a range read is an index range) and >= 1.
    plan = " ".join(str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN SELECT hash FROM entries WHERE seq = 1"))
    if "INTEGER PRIMARY KEY" not in plan:
        return False
    lowest: Any = conn.execute("SELECT seq FROM entries ORDER BY seq LIMIT 1").fetchall()
    return not lowest or lowest[0][0] >= 1


def _walk(ordered: Sequence[RangeResult], count: int, against: Checkpoint | None,
          stored_hash: Callable[[int], str | None]) -> WalkResult:
    # chain.walk's result over every range, checkpoint included, from the ranges' own.
    if against is not None and against.count == 0 and against.head != GENESIS:
        return WalkResult(0, GENESIS, None, ZERO_CHECKPOINT_PROBLEM)
    failed = next((r.walk for r in ordered if r.walk is not None), None)
    if against is not None and 0 < against.count <= count and (failed is None or (failed.bad_seq or 0) > against.count):
        # The walk reached the checkpoint's entry with its hash intact: it must be the checkpoint's head.
        if stored_hash(against.count) != against.head:
            c = against.count
            return WalkResult(c - 1, stored_hash(c - 1) or GENESIS, c, rewritten_problem(c))
    if failed is not None:
        return failed
    head = ordered[-1].last_hash if ordered else GENESIS
    if against is not None and against.count > count:
        return WalkResult(count, head or GENESIS, count + 1, removed_problem(count, against.count))
    return WalkResult(count, head or GENESIS)


def _report(walked: WalkResult, other: tuple[int, str] | None, against: Checkpoint | None) -> VerifyReport:
    # The walk's problem wins a tie at one seq, as in the reference.
    bad, problem = walked.bad_seq, walked.problem
    if other is not None and (bad is None or other[0] < bad):
        bad, problem = other
    return VerifyReport(ok=bad is None, count=walked.count, head=walked.head, sqlite_version=apsw.sqlite_lib_version(),
                        first_bad_seq=bad, problem=problem, against=against)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --- processes -------------------------------------------------------------------------------------------

def _check_ranges(conn: apsw.Connection, path: Path, ranges: list[tuple[int, int]], processes: int,
                  keyed: bool) -> tuple[dict[int, RangeResult], int]:
    results: dict[int, RangeResult] = {}
    lock = threading.Lock()
    # The next range to hand out, and the first one not needed: the one after a range where the walk stopped.
    cursor = {"next": 0, "stop": len(ranges)}

    def take(spare: int = 0) -> int | None:
        # `spare`: hand out a range only if at least that many remain after it.
        with lock:
            i = cursor["next"]
            if i + spare >= min(len(ranges), cursor["stop"]):
                return None
            cursor["next"] = i + 1
            return i

    def keep(i: int, result: RangeResult) -> None:
        with lock:
            results[i] = result
            if result.walk is not None:
                cursor["stop"] = min(cursor["stop"], i + 1)

    def feed(worker: subprocess.Popen[bytes]) -> None:
        # One thread per worker: hands it ranges, waits (outside the GIL) for each result, hands it the next. The
        # worker holds a second range while many remain, so that it goes on while this thread waits for the GIL
        # (the caller's own range holds it for milliseconds at a time); near the end, one, so none waits there.
        assert worker.stdin is not None and worker.stdout is not None
        held = 0
        try:
            while True:
                while held < 2 and (i := take(spare=processes if held else 0)) is not None:
                    pickle.dump((i, *ranges[i]), worker.stdin)
                    held += 1
                if not held:
                    break
                worker.stdin.flush()
                done, result = pickle.load(worker.stdout)
                held -= 1
                keep(done, result)
        except (OSError, EOFError, pickle.UnpicklingError):
            pass  # the worker died; the ranges it held are checked below
        finally:
            _stop(worker)

    workers = [w for w in (_start(path) for _ in range(processes - 1)) if w is not None]
    feeders = [threading.Thread(target=feed, args=(w,), name="ledger-verify", daemon=True) for w in workers]
    for feeder in feeders:
        feeder.start()
    try:
        while (i := take()) is not None:
            keep(i, check_range(conn, *ranges[i], keyed))
    except BaseException:
        with lock:
            cursor["stop"] = 0  # hand out nothing more
        raise
    finally:
        for feeder in feeders:
            feeder.join()
    for i in range(min(len(ranges), cursor["stop"])):
        if i not in results:
            keep(i, check_range(conn, *ranges[i], keyed))
    return results, 1 + len(workers)


def _start(path: Path) -> subprocess.Popen[bytes] | None:
    try:
        return start_python("from form_handler.ledger.sqlite.verify import serve; serve()", str(path),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:  # no process to spare: this one checks the ranges
        return None


def _stop(worker: subprocess.Popen[bytes]) -> None:
    for pipe in (worker.stdin, worker.stdout):
        if pipe is not None:
            pipe.close()
    try:
        worker.wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def serve() -> None:
    """A worker process: checks each range it is sent, on its own read-only connection and snapshot."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    try:
        conn = apsw.Connection(sys.argv[1], flags=apsw.SQLITE_OPEN_READONLY)
        configure(conn)
        conn.execute("BEGIN")
        keyed = personal_keyed(conn)
        while True:
            try:
                i, first, last = pickle.load(source)
            except EOFError:
                return
            pickle.dump((i, check_range(conn, first, last, keyed)), sink)
            sink.flush()
    except Exception:
        sys.exit(1)  # the caller checks this worker's range itself, and reports an error that recurs there
