"""Per-route cost at several ledger sizes, side by side, and how much each route grew.

    .venv/bin/python -m bench.scale_routes [--sizes 10000,100000] [--repeats 15] [--dir /tmp] [--keep]

Each ledger is built through the ledger's own append path (LedgerTxn, 500 consents per transaction, as the
group-commit writer batches them): 60% of the people give an address asking for change e-mails and 90% of
those confirm it; 2% withdraw and 1% are erased. Before each measurement come fresh subjects for the links
to act for (each a person with two confirmed receipts, spelled differently), and version V2 is published as
a material change, so reconsent links agree to it.

The app is served in-process (Starlette's TestClient: the whole ASGI stack, the writer thread, the read
pool, the background mailer), and each route is requested `--repeats` times after one unmeasured request;
every link POST acts for a subject of its own, since a used link does nothing. For each route it prints the
median wall time, the median CPU time of this process (less disturbed by other work on a shared machine)
and the median of SQLite's virtual-machine steps (sqlite3_stmt_status, exact and repeatable), then the
growth from the first size to the last; it exits 1 when a route's CPU time or VM steps grew more than 2x.

With --keep the ledgers stay in --dir/scale-<size>/ and a later run reuses them (a million consents take
several minutes to build). It also times rebuilding what migrations 4 and 5 add to an existing ledger (the
address index and the statistics counters), rolled back. build(), add_subjects() and measure() are importable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw

from form_handler.consent import keys

from form_handler.ledger.sqlite import schema

from form_handler.consent import tokens
from form_handler.ledger.sqlite.store import ConsentDraft, Ledger, Receipt
from form_handler.settings import Settings

POLICY_ID = "privacy"
V1, V2 = "1" * 64, "2" * 64
SECRET = "bench secret"
PURPOSES: tuple[tokens.Purpose, ...] = ("confirm", "reconsent", "withdraw", "unsubscribe")


@dataclass(frozen=True)
class Subjects:
    """Fresh people for one measurement: per link purpose one receipt id each (for confirm, an unconfirmed
    receipt), and receipts whose withdraw token is known (for POST /api/withdraw)."""

    links: dict[str, list[str]]
    receipts: list[Receipt]


@dataclass(frozen=True)
class Cost:
    wall_ms: float
    cpu_ms: float
    vm_steps: int


def _draft(email: str | None, i: int, *, updates: bool) -> ConsentDraft:
    return ConsentDraft(POLICY_ID, V1, "/feedback/", f"Feedback number {i}.", email, email is not None, updates,
                        i % 3 == 0)


def build(path: Path, consents: int, *, batch: int = 500) -> float:
    """Append `consents` people (and their confirmations, withdrawals, erasures) to the ledger; return seconds."""
    started = time.perf_counter()
    with Ledger(path) as led:
        for first in range(0, consents, batch):
            with led.transaction() as txn:
                for i in range(first, min(first + batch, consents)):
                    asks = i % 5 < 3
                    receipt = txn.append_consent(_draft(f"person{i}@example.org" if asks or i % 2 else None, i,
                                                        updates=asks))
                    if asks and i % 10 != 0:
                        txn.append("confirmation", receipt.receipt_id, policy_id=POLICY_ID)
                    if i % 50 == 7:
                        txn.withdraw(receipt.receipt_id, receipt.withdraw_token)
                    elif i % 100 == 13:
                        txn.erase(receipt.receipt_id)
        led.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return time.perf_counter() - started


def add_subjects(path: Path, count: int) -> Subjects:
    """`count` new people per link purpose, and `count` receipts with known withdraw tokens."""
    tag = f"{time.time_ns():x}"
    links: dict[str, list[str]] = {}
    with Ledger(path) as led, led.transaction() as txn:
        for purpose in PURPOSES:
            ids = links[purpose] = []
            for n in range(count):
                email = f"{purpose}.{tag}.{n}@example.org"
                for spelling in (email, email.upper()):  # one person: the address as compared
                    receipt = txn.append_consent(_draft(spelling, n, updates=True))
                    txn.append("confirmation", receipt.receipt_id, policy_id=POLICY_ID)
                if purpose == "confirm":
                    receipt = txn.append_consent(_draft(email, n, updates=True))
                ids.append(receipt.receipt_id)
        receipts = [txn.append_consent(_draft(None, n, updates=False)) for n in range(count)]
    return Subjects(links, receipts)


def _manifest(path: Path) -> str:
    change = {"date": "2026-11-20", "effective": "2026-12-20", "summary": "Kept longer.", "material": True,
              "version": V2}
    path.write_text(json.dumps({"policies": [{
        "id": POLICY_ID, "title": "Privacy Policy", "url": "privacy/", "version": V2, "changes": [change],
        "versions": [{"version": V1, "effective": "2026-01-01", "url": "privacy/v1/", "current": False},
                     {"version": V2, "effective": "2026-12-20", "url": "privacy/", "current": True}],
    }]}))
    return str(path)


def _path(purpose: tokens.Purpose) -> str:
    return "/api/" + {"withdraw": "withdraw-consent"}.get(purpose, purpose)


def _link(purpose: tokens.Purpose, receipt_id: str) -> str:
    version = V1 if purpose == "confirm" else V2
    key = keys.from_secret(SECRET)
    return f"{_path(purpose)}?token={tokens.sign(key, purpose, receipt_id, POLICY_ID, version, now=time.time())}"


class _Steps:
    """VM steps of the statements run by requests, on every connection opened while installed."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def _profile(self, event: dict[str, object]) -> None:
        if threading.current_thread().name.startswith("asyncio"):  # the background mailer, not a request
            return
        status = event["stmt_status"]
        if isinstance(status, dict):
            with self._lock:
                self.count += int(status["SQLITE_STMTSTATUS_VM_STEP"])

    def hook(self, connection: apsw.Connection) -> None:
        connection.trace_v2(apsw.SQLITE_TRACE_PROFILE, self._profile)


def measure(path: Path, subjects: Subjects, *, repeats: int = 15) -> dict[str, Cost]:
    """The median cost of each route, each requested `repeats` times after one unmeasured request."""
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

    from form_handler.web.app import create_app

    if len(subjects.receipts) < repeats + 1 or any(len(ids) < repeats + 1 for ids in subjects.links.values()):
        raise ValueError(f"add_subjects(path, {repeats + 1}) or more is needed for {repeats} repeats.")
    settings = Settings(ledger_path=path, manifest=_manifest(path.with_name("policy-versions.json")), rate_limit=0,
                        smtp_host="127.0.0.1", smtp_port=9, base_url="https://policies.example", secret=SECRET)
    form = {"message": "Hello", "policy_id": POLICY_ID, "policy_version": V2, "page": "/feedback/"}
    results: dict[str, Cost] = {}
    steps = _Steps()
    apsw.connection_hooks.append(steps.hook)
    try:
        with TestClient(create_app(settings), base_url=settings.base_url) as client:

            def timed(name: str, request: Callable[[int], object], status: int) -> None:
                samples = []
                for n in range(repeats + 1):
                    steps.count = 0
                    wall, cpu = time.perf_counter(), time.process_time()
                    response = request(n)
                    sample = (time.perf_counter() - wall, time.process_time() - cpu, steps.count)
                    code = getattr(response, "status_code", None)
                    if code != status:
                        raise AssertionError(f"{name}: expected {status}, got {code}")
                    if n:
                        samples.append(sample)
                results[name] = Cost(statistics.median(s[0] for s in samples) * 1000,
                                     statistics.median(s[1] for s in samples) * 1000,
                                     int(statistics.median(s[2] for s in samples)))

            timed("GET /api/stats", lambda n: client.get("/api/stats"), 200)
            timed("GET /api/ledger/head", lambda n: client.get("/api/ledger/head"), 200)
            timed("GET /api/healthz", lambda n: client.get("/api/healthz"), 200)
            timed("POST /api/feedback", lambda n: client.post("/api/feedback", json=form), 201)
            timed("POST /api/withdraw", lambda n: client.post("/api/withdraw", json={
                "receipt_id": subjects.receipts[n].receipt_id,
                "withdraw_token": subjects.receipts[n].withdraw_token}), 200)
            for purpose in PURPOSES:
                ids = subjects.links[purpose]
                timed(f"GET {_path(purpose)}", lambda n: client.get(_link(purpose, ids[0])), 200)
            for purpose in PURPOSES:
                ids = subjects.links[purpose]
                timed(f"POST {_path(purpose)}", lambda n: client.post(_link(purpose, ids[n])), 200)
    finally:
        apsw.connection_hooks.remove(steps.hook)
    return results


def migration_backfill(path: Path) -> float:
    """Seconds to build what migrations 4 and 5 add, from this ledger's entries, in one rolled-back transaction."""
    backfill = [s for s in schema._SCHEMA_5.split(";") if "INSERT INTO stats_" in s and "FROM receipts" in s]
    with Ledger(path) as led:
        conn = led.connection
        conn.create_scalar_function("email_key", schema._email_key_or_none, 1, deterministic=True)
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("UPDATE personal SET email_key = email_key(email) WHERE email IS NOT NULL")
            conn.execute("DELETE FROM stats_totals; DELETE FROM stats_days; DELETE FROM stats_versions")
            for statement in backfill:
                conn.execute(statement)
            took = time.perf_counter() - started
        finally:
            conn.execute("ROLLBACK")
    return took


def _ledger(folder: Path, size: int) -> Path:
    """The ledger of `size` consents in `folder`, built unless a finished one is there (its marker file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path, marker = folder / "ledger.sqlite3", folder / "built.json"
    if marker.exists() and path.exists():
        print(f"{size:,} consents: reusing {path}", flush=True)
        return path
    for stale in folder.glob("ledger.sqlite3*"):
        stale.unlink()
    seconds = build(path, size)
    with Ledger(path, readonly=True) as led:
        entries = led.head().count
    marker.write_text(json.dumps({"consents": size, "entries": entries, "seconds": seconds}))
    print(f"{size:,} consents: {entries:,} entries, built in {seconds:.1f} s ({size / seconds:,.0f} consents/s with "
          f"their other entries), {path.stat().st_size / 2**20:,.0f} MB", flush=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000", help="consents per ledger, comma-separated (two or more)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dir", type=Path, default=None, help="where the ledgers go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the ledgers in --dir and reuse them next time")
    args = parser.parse_args()
    if args.keep and args.dir is None:
        parser.error("--keep needs --dir")
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    measured: dict[int, dict[str, Cost]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in sizes:
            path = _ledger((args.dir if args.keep else Path(tmp)) / f"scale-{size}", size)
            print(f"  migrations 4+5 backfill on it: {migration_backfill(path):.2f} s", flush=True)
            measured[size] = measure(path, add_subjects(path, args.repeats + 1), repeats=args.repeats)
    first, last = sizes[0], sizes[-1]
    print(f"\nmedians of {args.repeats} requests: wall ms / CPU ms / VM steps, at " + ", ".join(f"{s:,}" for s in sizes)
          + " consents; growth of CPU time and of VM steps from the first to the last")
    grown = False
    for route in measured[first]:
        a, b = measured[first][route], measured[last][route]
        cpu, vm = b.cpu_ms / max(a.cpu_ms, 1e-3), b.vm_steps / max(a.vm_steps, 1)
        grown |= cpu > 2 or vm > 2
        cells = " | ".join(f"{c.wall_ms:6.1f} / {c.cpu_ms:5.1f} / {c.vm_steps:6d}"
                           for c in (measured[s][route] for s in sizes))
        print(f"{route:26} | {cells} | CPU {cpu:.2f}x, VM {vm:.2f}x{'  > 2x' if cpu > 2 or vm > 2 else ''}")
    sys.exit(1 if grown else 0)


if __name__ == "__main__":
    main()
