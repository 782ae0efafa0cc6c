"""A million people: every route and every ledger command at 10k, 100k (and 1M) consents, side by side.

    .venv/bin/python -m bench.scale_bench                                  # 10k and 100k consents (a few minutes)
    .venv/bin/python -m bench.scale_bench --sizes 10000,100000,1000000     # and 1M (building it: several minutes)
    .venv/bin/python -m bench.scale_bench --dir /tmp/scale --repeats 25 --cli-runs 5

1. Builds each ledger once, through the ledger's own append path in transactions of 1,000 consents (one
   LedgerTxn.append_consents call each, then append() for what follows them): 60% of the people give an address asking for change e-mails and 90% of
   those confirm it; some stop the e-mails (unsubscribe), 2% withdraw, 1% are erased. Then a material change is
   published (version V2 in the manifest) and its notice campaign has begun: a tenth of the subscribers have a
   notice, a quarter of those agreed again. The ledgers stay in --dir (default bench/out/scale/) with a marker
   file, so the 1M one is built once; a later run reuses them (measuring adds a few hundred entries each time).
2. Starts a real uvicorn process (`form_handler.web.app:app`, one worker, httptools) on each ledger and requests
   every route `--repeats` times after one unmeasured request, over one keep-alive connection: POST
   /api/feedback and /api/withdraw, GET /api/ledger/head and /api/stats, GET and POST of each e-mail link
   (confirm, reconsent, withdraw-consent, unsubscribe; every POST acts for a fresh person with two receipts), and
   a feedback POST sent while an unsubscribe POST runs. Per route: median wall time, and the server's CPU time
   per request (every thread's of uvicorn and of its ledger writer process, from /proc/<pid>/task/*/schedstat, in
   ns: steadier than wall time on a shared machine); at the end uvicorn's peak RSS (VmHWM; the writer process's own
   is not in it).
3. Runs every ledger command as a real process, `--cli-runs` times: `notify --dry-run`, `ledger verify`, `ledger
   stats`, `ledger export` (JSON Lines, to /dev/null), `ledger export --third-party` and `ledger head`: median
   wall and CPU time and peak RSS of the command or any process it starts (the children's ru_maxrss, read by a small
   parent process so that this one's size does not leak into the figure).
4. Prints one table, the sizes side by side, with the growth from the first size to the last, and exits 1 when:
   a route's median wall time AND its server CPU per request both grew more than 2x; `ledger head` or `ledger
   stats` (answered from the head and the counters) grew more than 2x in wall and CPU time (the process's, whose
   start-up is most of it); or any command's peak RSS passed 200 MB.
   Commands that must read everything (verify, export, notify) grow linearly in time: reported, not judged.

build(), ledger_for() and write_manifest() are importable (bench/verify_speed.py reuses the ledgers).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from form_handler.consent import keys, tokens
from form_handler.ledger.sqlite.store import ConsentDraft, Ledger, Receipt

ROOT = Path(__file__).resolve().parent.parent
POLICY_ID = "privacy"
V1, V2 = "1" * 64, "2" * 64
SECRET = "bench secret"
BATCH = 1_000
PURPOSES: tuple[tokens.Purpose, ...] = ("confirm", "reconsent", "withdraw", "unsubscribe")
# Peak memory allowed to any command at any size (the bound for notify at 1M: ~200 MB).
MEMORY_LIMIT_MB = 200
# Commands that answer from the head or the counters: judged on time growth like a route.
CONSTANT_COMMANDS = ("ledger head", "ledger stats")


def _draft(i: int, email: str | None, *, updates: bool) -> ConsentDraft:
    return ConsentDraft(POLICY_ID, V1, "/feedback/", f"Feedback number {i}, with a few words more.", email,
                        email is not None, updates, i % 3 == 0)


def build(path: Path, consents: int, *, batch: int = BATCH) -> tuple[float, int]:
    """Append `consents` people and what follows them (see the module's docstring); (seconds, entries)."""
    started = time.perf_counter()
    subscribers: list[str] = []
    with Ledger(path) as led:
        for first in range(0, consents, batch):
            people = range(first, min(first + batch, consents))
            with led.transaction() as txn:
                # 60% give an address asking for updates.
                receipts = txn.append_consents([_draft(i, f"person{i}@example.org" if i % 5 < 3 else None,
                                                       updates=i % 5 < 3) for i in people])
                for i, receipt in zip(people, receipts):
                    asks = i % 5 < 3
                    if asks and (i // 5) % 10 != 0:  # 90% of those confirm it
                        txn.append("confirmation", receipt.receipt_id, policy_id=POLICY_ID)
                        if i % 23 == 4:
                            txn.append("withdrawal", receipt.receipt_id, consent_updates=False)  # unsubscribe
                        else:
                            subscribers.append(receipt.receipt_id)
                    if i % 50 == 7:
                        txn.withdraw(receipt.receipt_id, receipt.withdraw_token)
                    elif i % 100 == 13:
                        txn.erase(receipt.receipt_id)
        # V2 published: the campaign has reached a tenth of the subscribers; a quarter of those agreed again.
        campaign = subscribers[: len(subscribers) // 10]
        for first in range(0, len(campaign), batch):
            with led.transaction() as txn:
                for n, receipt_id in enumerate(campaign[first:first + batch], start=first):
                    txn.append("notice", receipt_id, policy_id=POLICY_ID, policy_version=V2, change_date="2026-11-20",
                               effective="2026-12-20")
                    if n % 4 == 0:
                        txn.append("reconsent", receipt_id, policy_id=POLICY_ID, policy_version=V2)
        seconds = time.perf_counter() - started
        led.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        entries = led.head().count
    return seconds, entries


def ledger_for(folder: Path, consents: int) -> Path:
    """The ledger of `consents` people in folder/scale-<consents>/, built unless a finished one is there."""
    here = folder / f"scale-{consents}"
    here.mkdir(parents=True, exist_ok=True)
    path, marker = here / "ledger.sqlite3", here / "built.json"
    if marker.exists() and path.exists():
        built = json.loads(marker.read_text())
        print(f"{consents:,} consents: reusing {path} (built at {built['consents_per_second']:,.0f} consents/s)",
              flush=True)
        return path
    for stale in here.glob("ledger.sqlite3*"):
        stale.unlink()
    print(f"{consents:,} consents: building {path} (load average {os.getloadavg()[0]:.1f})", flush=True)
    seconds, entries = build(path, consents)
    marker.write_text(json.dumps({"consents": consents, "entries": entries, "seconds": seconds,
                                  "consents_per_second": consents / seconds,
                                  "entries_per_second": entries / seconds}))
    print(f"  {entries:,} entries in {seconds:.1f} s: {consents / seconds:,.0f} consents/s, {entries / seconds:,.0f}"
          f" entries/s through the ledger API; {path.stat().st_size / 1e6:,.0f} MB", flush=True)
    return path


def write_manifest(path: Path) -> Path:
    """A manifest in which V2 of `privacy` is a published material change (V1 before it)."""
    change = {"date": "2026-11-20", "effective": "2026-12-20", "summary": "Feedback is kept two years.",
              "material": True, "version": V2}
    path.write_text(json.dumps({"policies": [{
        "id": POLICY_ID, "title": "Privacy Policy", "url": "privacy/", "version": V2, "changes": [change],
        "versions": [{"version": V1, "effective": "2026-01-01", "url": "privacy/versions/2026-01-01/"},
                     {"version": V2, "effective": "2026-12-20", "url": "privacy/versions/2026-12-20/",
                      "current": True}],
    }]}))
    return path


@dataclass(frozen=True)
class Subjects:
    """Fresh people for one measurement: per link purpose receipt ids (for confirm, unconfirmed receipts), and
    receipts whose withdraw token is known (for POST /api/withdraw)."""

    links: dict[str, list[str]]
    receipts: list[Receipt]


def add_subjects(path: Path, count: int) -> Subjects:
    """`count` new people per link purpose, each with two receipts (the address spelled two ways), and `count`
    receipts with known withdraw tokens."""
    tag = f"{time.time_ns():x}"
    links: dict[str, list[str]] = {}
    with Ledger(path) as led, led.transaction() as txn:
        for purpose in PURPOSES:
            ids = links[purpose] = []
            for n in range(count):
                email = f"{purpose}.{tag}.{n}@example.org"
                for spelling in (email, email.upper()):  # one person: the address as compared
                    receipt = txn.append_consent(_draft(n, spelling, updates=True))
                    txn.append("confirmation", receipt.receipt_id, policy_id=POLICY_ID)
                if purpose == "confirm":
                    receipt = txn.append_consent(_draft(n, email, updates=True))
                ids.append(receipt.receipt_id)
        receipts = [txn.append_consent(_draft(n, None, updates=False)) for n in range(count)]
    return Subjects(links, receipts)


def _route(purpose: tokens.Purpose) -> str:
    return "/api/" + {"withdraw": "withdraw-consent"}.get(purpose, purpose)


def _link(purpose: tokens.Purpose, receipt_id: str) -> str:
    version = V1 if purpose == "confirm" else V2
    token = tokens.sign(keys.from_secret(SECRET), purpose, receipt_id, POLICY_ID, version, now=time.time())
    return f"{_route(purpose)}?token={token}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One uvicorn process serving the product on a ledger, and its CPU time and memory from /proc."""

    def __init__(self, ledger: Path, manifest: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "POLICY_SITE_LEDGER": str(ledger),
               "POLICY_SITE_MANIFEST": str(manifest), "POLICY_SITE_RATE_LIMIT": "0", "POLICY_SITE_SECRET": SECRET,
               "POLICY_SITE_BASE_URL": self.base, "POLICY_SITE_SMTP_HOST": "127.0.0.1", "POLICY_SITE_SMTP_PORT": "9"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "form_handler.web.app:app", "--host", "127.0.0.1", "--port",
             str(self.port), "--no-access-log", "--log-level", "warning"], cwd=ledger.parent, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.base}/api/healthz", timeout=2)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"uvicorn did not start (exit status {self.proc.poll()})") from None
                time.sleep(0.1)

    def cpu_ns(self) -> int:
        """CPU time of every thread of the server and of its children (the ledger writer process) so far
        (schedstat: ns, not the 10 ms ticks of /proc/stat)."""
        total = 0
        for pid in (self.proc.pid, *self._children()):
            try:
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except OSError:
                continue
            for task in tasks:
                try:
                    total += int((task / "schedstat").read_text().split()[0])
                except (OSError, IndexError, ValueError):
                    pass  # a thread that ended meanwhile
        return total

    def _children(self) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    found.append(int(stat.parent.name))
            except (OSError, IndexError, ValueError):
                pass
        return found

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MB."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@dataclass(frozen=True)
class Cost:
    ms: float  # median wall time
    cpu_ms: float | None = None  # median CPU time: the server's per request (routes), the command's (commands)
    mb: float | None = None  # peak RSS (commands)
    note: str = ""


def measure_routes(ledger: Path, manifest: Path, repeats: int) -> tuple[dict[str, Cost], tuple[float, float]]:
    """The median cost of every route on a real uvicorn process, and its memory (VmRSS, VmHWM) afterwards."""
    subjects = add_subjects(ledger, 2 * (repeats + 1))
    server = Server(ledger, manifest)
    results: dict[str, Cost] = {}
    form = {"message": "Hello", "policy_id": POLICY_ID, "policy_version": V2, "page": "/feedback/"}
    try:
        with httpx.Client(base_url=server.base, timeout=120) as client:

            def timed(name: str, request: Callable[[int], httpx.Response], status: int) -> None:
                walls, cpus = [], []
                for n in range(repeats + 1):
                    cpu, wall = server.cpu_ns(), time.perf_counter()
                    response = request(n)
                    wall, cpu = time.perf_counter() - wall, server.cpu_ns() - cpu
                    if response.status_code != status:
                        raise SystemExit(f"{name}: expected {status}, got {response.status_code}: "
                                         f"{response.text[:200]}")
                    if n:  # the first request warms the caches and the connection
                        walls.append(wall)
                        cpus.append(cpu)
                results[name] = Cost(statistics.median(walls) * 1000, statistics.median(cpus) / 1e6)

            timed("POST /api/feedback", lambda n: client.post("/api/feedback", json=form), 201)
            timed("POST /api/withdraw", lambda n: client.post("/api/withdraw", json={
                "receipt_id": subjects.receipts[n].receipt_id,
                "withdraw_token": subjects.receipts[n].withdraw_token}), 200)
            timed("GET /api/ledger/head", lambda n: client.get("/api/ledger/head"), 200)
            timed("GET /api/stats", lambda n: client.get("/api/stats"), 200)
            for purpose in PURPOSES:
                ids = subjects.links[purpose]
                timed(f"GET {_route(purpose)}", lambda n: client.get(_link(purpose, ids[n])), 200)
            for purpose in PURPOSES:
                ids = subjects.links[purpose]
                timed(f"POST {_route(purpose)}", lambda n: client.post(_link(purpose, ids[n])), 200)
            results["POST /api/feedback beside an unsubscribe POST"] = _beside(
                server.base, form, subjects.links["unsubscribe"][repeats + 1:], repeats)
        memory = server.memory_mb()
    finally:
        server.stop()
    return results, memory


def _beside(base: str, form: dict[str, str], unsubscribe_ids: list[str], repeats: int) -> Cost:
    """A feedback POST sent while an unsubscribe POST (a person's link) is in flight on another connection."""
    walls: list[float] = []
    with httpx.Client(base_url=base, timeout=120) as link_client, httpx.Client(base_url=base, timeout=120) as client:
        for n in range(repeats + 1):
            sent = threading.Event()

            def unsubscribe(n: int = n) -> None:
                sent.set()
                response = link_client.post(_link("unsubscribe", unsubscribe_ids[n]))
                if response.status_code != 200:
                    raise SystemExit(f"unsubscribe POST beside a feedback POST: {response.status_code}")

            thread = threading.Thread(target=unsubscribe)
            thread.start()
            sent.wait()
            time.sleep(0.0005)  # let the link's request reach the server first
            wall = time.perf_counter()
            response = client.post("/api/feedback", json=form)
            wall = time.perf_counter() - wall
            thread.join()
            if response.status_code != 201:
                raise SystemExit(f"feedback POST beside an unsubscribe POST: {response.status_code}")
            if n:
                walls.append(wall)
    return Cost(statistics.median(walls) * 1000, note=f"max {max(walls) * 1000:.1f} ms")


# Runs a command as its child and prints the peak RSS of it or any process it started: a child of this (large)
# process would carry this process's high-water mark across exec into its own ru_maxrss; one of a small one not.
_MEASURE = """
import os, resource, subprocess, sys
status = subprocess.call([sys.executable, "-c", "from form_handler.cli import main; main()", *sys.argv[1:]],
                         stdout=subprocess.DEVNULL)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime, status)
"""

COMMANDS: dict[str, tuple[str, ...]] = {
    "notify --dry-run": ("notify", "--dry-run"),
    "ledger verify": ("ledger", "verify"),
    "ledger stats": ("ledger", "stats"),
    "ledger export": ("ledger", "export"),
    "ledger export --third-party": ("ledger", "export", "--third-party"),
    "ledger head": ("ledger", "head"),
}


def measure_commands(ledger: Path, manifest: Path, runs: int) -> dict[str, Cost]:
    """Each ledger command as a real process, `runs` times: median wall and CPU time, the highest peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POLICY_SITE_SECRET": SECRET}
    results: dict[str, Cost] = {}
    for name, args in COMMANDS.items():
        extra = ("--manifest", str(manifest)) if args[0] == "notify" else ()
        walls, cpus, peaks = [], [], []
        for _ in range(runs):
            wall = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", _MEASURE, *args, "--ledger", str(ledger), *extra],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            walls.append(time.perf_counter() - wall)
            peak, cpu, status = done.stdout.split()[-3:]
            if int(status) != 0:
                raise SystemExit(f"{name} exited {status}: {done.stderr[-500:]}")
            peaks.append(int(peak) / 1024)
            cpus.append(float(cpu))
        results[name] = Cost(statistics.median(walls) * 1000, statistics.median(cpus) * 1000, mb=max(peaks))
    return results


def report(sizes: list[int], routes: dict[int, dict[str, Cost]], memory: dict[int, tuple[float, float]],
           commands: dict[int, dict[str, Cost]], entries: dict[int, int]) -> bool:
    """Print the table; True when a limit of the module's docstring was passed."""
    first, last = sizes[0], sizes[-1]
    failed = False
    header = " | ".join(f"{s:>20,}" for s in sizes)
    print(f"\nconsents                                       | {header} | growth {first:,} -> {last:,}")
    print(f"{'entries':<46} | " + " | ".join(f"{entries[s]:>20,}" for s in sizes) + " |")
    print("routes: median wall ms / server CPU ms per request")
    for name in routes[first]:
        a, b = routes[first][name], routes[last][name]
        wall = b.ms / max(a.ms, 1e-3)
        cpu = (b.cpu_ms or 0) / max(a.cpu_ms or 0, 1e-3) if a.cpu_ms is not None else wall
        over = wall > 2 and cpu > 2
        failed |= over
        cells = " | ".join(f"{routes[s][name].ms:8.1f} / {routes[s][name].cpu_ms:7.2f}" if routes[s][name].cpu_ms
                           is not None else f"{routes[s][name].ms:8.1f} {routes[s][name].note:>11}" for s in sizes)
        print(f"{name:<46} | {cells} | wall {wall:.2f}x, CPU {cpu:.2f}x{'  > 2x' if over else ''}")
    print(f"{'uvicorn RSS after the run / peak, MB':<46} | "
          + " | ".join(f"{memory[s][0]:8.0f} / {memory[s][1]:7.0f}" for s in sizes) + " |")
    print("commands: median wall s / CPU s / peak RSS MB")
    for name in commands[first]:
        a, b = commands[first][name], commands[last][name]
        growth, cpu = b.ms / max(a.ms, 1e-3), (b.cpu_ms or 0) / max(a.cpu_ms or 0, 1e-3)
        over_time = name in CONSTANT_COMMANDS and growth > 2 and cpu > 2
        over_memory = any((commands[s][name].mb or 0) > MEMORY_LIMIT_MB for s in sizes)
        failed |= over_time or over_memory
        cells = " | ".join(f"{c.ms / 1000:6.2f} / {(c.cpu_ms or 0) / 1000:5.2f} / {c.mb:4.0f}"
                           for c in (commands[s][name] for s in sizes))
        judged = "" if name in CONSTANT_COMMANDS else " (reads everything: not judged)"
        flags = ("  > 2x" if over_time else "") + (f"  > {MEMORY_LIMIT_MB} MB" if over_memory else "")
        print(f"{name:<46} | {cells} | wall {growth:.2f}x, CPU {cpu:.2f}x{judged}, memory "
              f"{(b.mb or 0) / max(a.mb or 0, 1e-3):.2f}x{flags}")
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="consents per ledger, comma-separated (add 1000000)")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "out" / "scale",
                        help="where the ledgers are built once and kept (default bench/out/scale)")
    parser.add_argument("--repeats", type=int, default=15, help="measured requests per route (after one unmeasured)")
    parser.add_argument("--cli-runs", type=int, default=3, help="runs of each command")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.dir.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(args.dir / "policy-versions.json")
    print(f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    routes: dict[int, dict[str, Cost]] = {}
    memory: dict[int, tuple[float, float]] = {}
    commands: dict[int, dict[str, Cost]] = {}
    entries: dict[int, int] = {}
    for size in sizes:
        ledger = ledger_for(args.dir, size)
        with Ledger(ledger, readonly=True) as led:
            entries[size] = led.head().count
        routes[size], memory[size] = measure_routes(ledger, manifest, args.repeats)
        print(f"  routes measured (load average {os.getloadavg()[0]:.2f})", flush=True)
        commands[size] = measure_commands(ledger, manifest, args.cli_runs)
        print(f"  commands measured (load average {os.getloadavg()[0]:.2f})", flush=True)
    failed = report(sizes, routes, memory, commands, entries)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"sizes": sizes, "entries": entries, "memory": memory,
                                         "routes": {s: {k: vars(v) for k, v in r.items()} for s, r in routes.items()},
                                         "commands": {s: {k: vars(v) for k, v in c.items()}
                                                      for s, c in commands.items()}}, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
