"""Throughput bench: durable submissions per second against a bare endpoint, same machine, same run.

Starts real uvicorn processes on 127.0.0.1 (the product `form_handler.web.app:app`, and `bench.bare_app:app`
which parses the same form and stores nothing), drives each with wrk (bench/post_form.lua: form posts,
a unique message each) at each connection count and worker count, interleaved, several runs, and prints
the medians. Every durable success was acknowledged only after its COMMIT; the bench checks afterwards
that the ledger holds at least as many entries as wrk counted successes and that it verifies. On SQLite the
product runs twice: as deployed (its writer in a process of its own) and with POLICY_SITE_LEDGER_WRITER_PROCESS=false
(the writer a thread of the service process, as before), so the two are compared in one run. Beside them runs
`bench.skeleton_app:app` (SQLite only), the bare endpoint plus the least a durable write costs in this design (a
writer process of its own, one fsync'd COMMIT per batch, nothing else): the distance from bare to it is the
design's, from it to durable the product's own per-request work.

With --ledger postgresql the durable app writes to PostgreSQL instead: a temporary server from Debian's
postgresql 15 binaries (tests/pgserver.py, as the tests start it), a fresh database per configuration; there
each uvicorn worker is one instance of the service (its own pool and group-commit writer) on the shared database.

Usage:
    .venv/bin/python -m bench.throughput [--duration 10] [--runs 3] [--connections 50,200] [--workers 1,2]
        [--ledger sqlite|postgresql] [--no-thread] [--no-skeleton]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("post_form.lua")
VERSION = "5" * 64
APPS = {"bare": "bench.bare_app:app", "skeleton": "bench.skeleton_app:app", "durable": "form_handler.web.app:app",
        "thread": "form_handler.web.app:app"}
# "thread" is the product with its SQLite writer as a thread of the service process (the writer before it had a
# process of its own), measured in the same run for comparison.
APP_ENV = {"thread": {"POLICY_SITE_LEDGER_WRITER_PROCESS": "false"}}


@dataclass(frozen=True)
class Sample:
    app: str
    workers: int
    connections: int
    run: int
    ok: int  # 2xx/3xx responses
    errors: int  # non-2xx/3xx, connect/read/write errors, timeouts
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server CPU (user + system, all its processes) per successful request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_manifest(path: Path) -> None:
    version = {"version": VERSION, "effective": "2026-11-20", "url": "privacy/", "current": True}
    path.write_text(json.dumps({"policies": [{"id": "privacy", "title": "Privacy Policy", "url": "privacy/",
                                              "version": VERSION, "changes": [], "versions": [version]}]}))


def start(app: str, workers: int, workdir: Path, ledger: Path | str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POLICY_SITE_LEDGER": str(ledger),
           "POLICY_SITE_MANIFEST": str(workdir / "policy-versions.json"), "POLICY_SITE_RATE_LIMIT": "0",
           **APP_ENV.get(app, {})}
    cmd = [sys.executable, "-m", "uvicorn", APPS[app], "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            # Any answer means it is listening; the bare app has no health route.
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/healthz", timeout=2)
            return proc, port
        except urllib.error.HTTPError:
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"uvicorn {APPS[app]} exited with {proc.returncode}")
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"uvicorn {APPS[app]} did not start within 60 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def cpu_seconds(pgid: int) -> float:
    """User + system CPU of every process in the server's process group (uvicorn and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(port: int, connections: int, duration: int, tag: str) -> dict[str, int]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(LUA),
           f"http://127.0.0.1:{port}/api/feedback", "--", VERSION, tag]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


def measure(app: str, workers: int, connections: int, run: int, proc: subprocess.Popen[bytes], port: int,
            duration: int) -> Sample:
    wrk(port, connections, 2, f"warm{run}{app}{workers}{connections}")  # warm-up, not counted
    cpu = cpu_seconds(proc.pid)
    r = wrk(port, connections, duration, f"r{run}{app}{workers}{connections}")
    cpu = cpu_seconds(proc.pid) - cpu
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    ok = r["requests"] - r["status"]
    return Sample(app, workers, connections, run, ok, errors, ok / (r["duration_us"] / 1e6),
                  r["p50_us"] / 1000, r["p99_us"] / 1000, cpu / max(ok, 1) * 1e6)


def check_ledger(ledger: Path | str, acknowledged: int) -> str:
    """The ledger holds every acknowledged submission (and maybe a few in flight at the end) and verifies."""
    from form_handler.ledger import open_ledger

    led = open_ledger(ledger, readonly=True)
    try:
        report = led.verify()
    finally:
        led.close()
    if not report.ok or report.count < acknowledged:
        raise SystemExit(f"{ledger}: {report.count} entries for {acknowledged} acknowledged, ok={report.ok}")
    return f"{report.count} entries, verify ok"


def check_skeleton(path: Path | str, acknowledged: int) -> str:
    """The skeleton's file holds every acknowledged write too (it is a floor for durable writes, so it must be one)."""
    from bench.skeleton_app import stored

    count = stored(str(path))
    if count < acknowledged:
        raise SystemExit(f"{path}: {count} rows for {acknowledged} acknowledged")
    return f"{count} rows for {acknowledged} acknowledged"


def table(samples: list[Sample], connections: list[int], workers: list[int]) -> str:
    apps = {s.app for s in samples}
    thread, skeleton = "thread" in apps, "skeleton" in apps
    lines = ["| workers | connections | bare req/s | durable req/s | durable / bare | durable p50 | durable p99 | bare p99 "
             "| CPU/request bare, durable |" + (" writer thread: req/s, / bare, p99, CPU/request |" if thread else "")
             + (" skeleton: req/s, / bare, p99, CPU/request |" if skeleton else ""),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if thread else "") + ("---:|" if skeleton else "")]
    for w in workers:
        for c in connections:
            def med(app: str, attr: str) -> float:
                return float(statistics.median(getattr(s, attr) for s in samples
                                               if s.app == app and s.workers == w and s.connections == c))
            bare, durable = med("bare", "per_second"), med("durable", "per_second")
            line = (f"| {w} | {c} | {bare:.0f} | {durable:.0f} | {durable / bare:.0%} | "
                    f"{med('durable', 'p50_ms'):.1f} ms | {med('durable', 'p99_ms'):.1f} ms | "
                    f"{med('bare', 'p99_ms'):.1f} ms | {med('bare', 'cpu_us'):.0f} µs, {med('durable', 'cpu_us'):.0f} µs |")
            if thread:
                t = med("thread", "per_second")
                line += f" {t:.0f}, {t / bare:.0%}, {med('thread', 'p99_ms'):.1f} ms, {med('thread', 'cpu_us'):.0f} µs |"
            if skeleton:
                k = med("skeleton", "per_second")
                line += f" {k:.0f}, {k / bare:.0%}, {med('skeleton', 'p99_ms'):.1f} ms, {med('skeleton', 'cpu_us'):.0f} µs |"
            lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (medians are reported)")
    parser.add_argument("--connections", default="50,200")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--ledger", choices=("sqlite", "postgresql"), default="sqlite",
                        help="where the durable app keeps its ledger")
    parser.add_argument("--no-thread", action="store_true",
                        help="SQLite: skip the product with its writer as a thread (measured beside it by default)")
    parser.add_argument("--no-skeleton", action="store_true",
                        help="skip bench/skeleton_app.py, the floor of a durable write (measured beside them by default)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; on Debian: apt-get install wrk.")
    connections = [int(c) for c in args.connections.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    load_before = os.getloadavg()
    samples: list[Sample] = []
    postgres = None
    if args.ledger == "postgresql":
        sys.path.insert(0, str(ROOT / "tests"))
        from pgserver import PgServer  # the tests' temporary server (initdb as the postgres user)

        postgres = PgServer()
    with tempfile.TemporaryDirectory(prefix="policy-bench-", dir=ROOT / "var" if (ROOT / "var").is_dir() else None) as tmp:
        workdir = Path(tmp)
        write_manifest(workdir / "policy-versions.json")
        for run in range(args.runs):
            for w in workers:
                # The skeleton is a floor for the SQLite writer process; beside PostgreSQL it would measure nothing of it.
                apps = ("bare", *(() if args.no_skeleton or postgres is not None else ("skeleton",)), "durable",
                        *(() if postgres is not None or args.no_thread else ("thread",)))
                for app in apps:  # interleaved, so drift in the machine hits them alike
                    ledger: Path | str = workdir / f"ledger-{app}-{run}-{w}.sqlite3"
                    if postgres is not None and app in ("durable", "thread"):
                        ledger = postgres.create_database()
                    proc, port = start(app, w, workdir, ledger)
                    try:
                        for c in connections:
                            s = measure(app, w, c, run, proc, port, args.duration)
                            samples.append(s)
                            print(f"run {run} {app:7} workers={w} c={c:3}: {s.per_second:7.0f}/s "
                                  f"p50 {s.p50_ms:6.1f} ms p99 {s.p99_ms:6.1f} ms cpu {s.cpu_us:5.0f} us/req errors {s.errors}",
                                  flush=True)
                    finally:
                        stop(proc)
                    acked = sum(s.ok for s in samples if s.app == app and s.workers == w and s.run == run)
                    if app == "skeleton":
                        print(f"  skeleton: {check_skeleton(ledger, acked)}", flush=True)
                    elif app != "bare":
                        print(f"  ledger: {check_ledger(ledger, acked)}", flush=True)
    if postgres is not None:
        postgres.stop()
    print(f"\nledger: {args.ledger}; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} CPUs; medians of {args.runs} runs of {args.duration} s\n")
    print(table(samples, connections, workers))
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in samples], indent=1))


if __name__ == "__main__":
    main()
