"""`ledger verify` against the hash limit: full verify beside raw chained sha256 over the same bytes, in one run.

    .venv/bin/python -m bench.verify_speed                           # 100k and 1M consents, 5 runs each
    .venv/bin/python -m bench.verify_speed --sizes 100000 --runs 7

The ledgers are bench/scale_bench.py's (built once through the ledger's own API and kept in its --dir: people
consent, 60% with an address asking for updates, 90% of those confirm; some stop the e-mails, withdraw or are
erased; a material change's notices and reconsents follow). Then, alternating so drift on a shared machine hits
both alike, it times:

- raw: sha256(previous hash + canonical bytes) chained over every entry in a Python loop, the bytes read into
  memory first (the rate the issue compares with);
- verify: Ledger.verify(), the full check (chain, links, columns, commitments) in one process per CPU;
- one process: Ledger.verify(workers=1);
- chain only: the least any verify must do, as a floor: each entry's stored bytes and hashes read from the file in
  as many ranges as verify used processes, on a pool of that many processes started once, and one sha256 and two
  comparisons per entry; no column, commitment, order or type check, so what verify takes beyond it is the cost
  of verify's own checks;

and prints medians, the ratio verify / raw, CPU time, and once each the old one-process verify
(form_handler.ledger.sqlite.verify.reference) and `policy-site ledger verify` as a command with its peak memory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import apsw

from form_handler.ledger.sqlite import verify
from bench import scale_bench
from form_handler.ledger.sqlite.store import Ledger

def chained_sha256(canonicals: list[bytes]) -> str:
    """The chain's own formula, entry after entry, over bytes already in memory."""
    prev, sha256 = "0" * 64, hashlib.sha256
    for data in canonicals:
        prev = sha256(prev.encode() + data).hexdigest()
    return prev


def chain_only(path: str, first: int, last: int) -> int:
    """Entries in seq first..last whose hash or link does not hold: the chain's check and nothing else."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    sha256, broken, prev = hashlib.sha256, 0, None
    for entry_hash, prev_hash, data in conn.execute(
            "SELECT hash, prev_hash, canonical FROM entries WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last)):
        broken += (prev is not None and prev_hash != prev) + (sha256(prev_hash.encode() + data).hexdigest() != entry_hash)
        prev = entry_hash
    conn.close()
    return broken


def chain_only_split(pool: ProcessPoolExecutor, path: Path, count: int, processes: int) -> int:
    bounds = [count * i // processes for i in range(processes + 1)]
    return sum(pool.map(chain_only, [str(path)] * processes, [b + 1 for b in bounds[:-1]], bounds[1:]))


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


# Runs the command as its child and prints its peak RSS: a child forked from this (large) process would carry
# this process's high-water mark into its own ru_maxrss across exec; one forked from a small process does not.
_MEASURE = """
import os, subprocess, sys
command = subprocess.Popen([sys.executable, "-c", "from form_handler.cli import main; main()", *sys.argv[1:]])
_, status, usage = os.wait4(command.pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def command_verify(path: Path) -> tuple[float, float, str]:
    """`policy-site ledger verify` in its own process: seconds, peak RSS in MB (it or a worker), its chain line."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, "ledger", "verify", "--ledger", str(path)],
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    lines = done.stdout.splitlines()
    peak_kb, status = (int(v) for v in lines[-1].split())
    assert status == 0, done.stdout
    chain = next(line for line in lines if line.startswith("chain:"))
    return seconds, peak_kb / 1024, chain


def measure(path: Path, runs: int) -> None:
    seconds, peak, chain = command_verify(path)
    with Ledger(path, readonly=True) as led:
        count = led.head().count
        conn = led._open_reader()
        conn.execute("BEGIN")
        canonicals = [bytes(d) for (d,) in conn.execute("SELECT canonical FROM entries ORDER BY seq")]
        head = chained_sha256(canonicals)
        outcome = verify.verify(conn, led.path)
        reference = timed(lambda: verify.reference(conn))
        conn.close(True)
        assert outcome.report.ok and outcome.report.head == head, outcome.report
        raw: list[tuple[float, float]] = []
        full: list[tuple[float, float]] = []
        single: list[tuple[float, float]] = []
        floor: list[tuple[float, float]] = []
        with ProcessPoolExecutor(outcome.processes) as pool:
            broken = chain_only_split(pool, path, count, outcome.processes)  # also starts the pool's processes
            if broken:
                raise SystemExit(f"{path}: {broken} entries fail the chain-only check, which verify passed")
            for _ in range(runs):
                raw.append(timed(lambda: chained_sha256(canonicals))[:2])
                full.append(timed(led.verify)[:2])
                single.append(timed(lambda: led.verify(workers=1))[:2])
                floor.append(timed(lambda: chain_only_split(pool, path, count, outcome.processes))[:2])
    canonicals.clear()  # the bytes are not needed past here (a `del` would leave the lambdas above unbound)

    def line(name: str, samples: list[tuple[float, float]]) -> float:
        walls = sorted(w for w, _ in samples)
        wall = statistics.median(walls)
        cpu = statistics.median(c for _, c in samples)
        print(f"  {name:<34} {count / wall:>11,.0f}/s  median {wall:6.3f} s ({walls[0]:.3f}-{walls[-1]:.3f})"
              f"  CPU of this process {cpu:6.3f} s")
        return wall

    print(f"{count:,} entries ({path.stat().st_size / 1e6:,.0f} MB), {runs} runs, load average now"
          f" {os.getloadavg()[0]:.2f}; verify used {outcome.processes} processes, {outcome.exact_rows} rows row by row")
    raw_wall = line("raw chained sha256 (bytes in memory)", raw)
    full_wall = line(f"verify ({outcome.processes} process{'es' if outcome.processes > 1 else ''})", full)
    single_wall = line("verify (1 process)", single)
    floor_wall = line(f"chain only ({outcome.processes} process{'es' if outcome.processes > 1 else ''})", floor)
    pairs = sorted(r[0] / f[0] for r, f in zip(raw, full))
    print(f"  {'old verify (one process, once)':<34} {count / reference[0]:>11,.0f}/s  {reference[0]:6.3f} s")
    print(f"  ratio verify / raw: {raw_wall / full_wall:.2f} on the medians (pair by pair {pairs[0]:.2f}-{pairs[-1]:.2f});"
          f" 1 process {raw_wall / single_wall:.2f}; CPU per entry in one process, verify / raw:"
          f" {statistics.median(c for _, c in single) / statistics.median(c for _, c in raw):.1f}x")
    print(f"  ratio chain only / raw: {raw_wall / floor_wall:.2f}; verify takes {full_wall / floor_wall:.1f}x the"
          " chain-only time")
    print(f"  `policy-site ledger verify` as a command, once: {seconds:.2f} s, peak RSS {peak:.0f} MB of any of its"
          f" processes ({chain})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="consents per ledger, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=scale_bench.ROOT / "bench" / "out" / "scale",
                        help="scale_bench.py's ledgers: reused when there, built and kept when not")
    args = parser.parse_args()
    print(f"{len(os.sched_getaffinity(0))} CPUs; load average {os.getloadavg()[0]:.2f}")
    for consents in (int(s) for s in args.sizes.split(",")):
        measure(scale_bench.ledger_for(args.dir, consents), args.runs)


if __name__ == "__main__":
    main()
