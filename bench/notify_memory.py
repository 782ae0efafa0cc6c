"""`policy-site notify` at scale: time and peak memory of a dry run (and, with --send, a real run).

    .venv/bin/python -m bench.notify_memory [--sizes 10000,100000] [--dir var/bench] [--send]
                                            [--baseline /tmp/before]

Each ledger is built through the ledger's own API in batches (LedgerTxn.append_consent, then
append("confirmation", ...)), as the writer does: 60% of the consents ask for e-mails about changes
and 90% of those are confirmed, so 54% of the people are written to about the one material change.
`notify` runs as a child process; its peak memory is the child's own peak RSS (os.wait4's rusage).
--baseline runs the same command from another copy of the code as well, side by side, e.g. the last
commit's: `mkdir /tmp/before && git archive HEAD form_handler | tar -x -C /tmp/before`.
--send also runs the real notify, unpaced, against a local SMTP server that discards each message,
on a copy of the ledger. Ledgers kept with --dir are reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from form_handler.ledger.sqlite.store import ConsentDraft, Ledger

ROOT = Path(__file__).resolve().parent.parent
V1, V2 = "1" * 64, "2" * 64
BATCH = 2_000


def build(path: Path, consents: int) -> None:
    """consents receipts of policy `privacy` on V1; 60% ask for updates, 90% of those confirmed."""
    start = time.perf_counter()
    with Ledger(path) as led:
        for first in range(0, consents, BATCH):
            with led.transaction() as txn:
                for i in range(first, min(first + BATCH, consents)):
                    updates, confirmed = i % 100 < 60, i % 100 < 54
                    receipt = txn.append_consent(ConsentDraft(
                        "privacy", V1, "/feedback/", f"Feedback number {i}.", f"person{i}@example.org",
                        False, updates, False))
                    if confirmed:
                        txn.append("confirmation", receipt.receipt_id, policy_id="privacy")
        led.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    took = time.perf_counter() - start
    print(f"built {consents:,} consents in {took:.1f} s ({consents / took:,.0f}/s): {path}", file=sys.stderr)


def ledger_for(folder: Path, consents: int) -> Path:
    path = folder / f"notify-{consents}.sqlite3"
    if path.exists():
        with Ledger(path, readonly=True) as led:
            count, notices = led.connection.execute(
                "SELECT sum(kind = 'consent'), sum(kind = 'notice') FROM entries").fetchall()[0]
        if count == consents and not notices:
            return path
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            name.unlink(missing_ok=True)
    build(path, consents)
    return path


def write_manifest(folder: Path) -> Path:
    path = folder / "policy-versions.json"
    path.write_text(json.dumps({"policies": [{
        "id": "privacy", "title": "Privacy Policy", "url": "privacy/", "version": V2,
        "changes": [{"date": "2026-11-20", "effective": "2026-12-20", "summary": "Feedback is kept two years.",
                     "material": True, "version": V2}],
        "versions": [{"version": V1, "effective": "2026-01-01", "url": "privacy/versions/2026-01-01/"},
                     {"version": V2, "effective": "2026-12-20", "url": "privacy/versions/2026-12-20/", "current": True}],
    }]}))
    return path


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_mb: float
    last_line: str


def run_notify(src: Path, ledger: Path, manifest: Path, *args: str, env: dict[str, str] | None = None) -> Measured:
    """`policy-site notify` from the code in `src`, as a child process; its time and peak RSS."""
    command = [sys.executable, "-c", "from form_handler.cli import main; main()", "notify",
               "--ledger", str(ledger), "--manifest", str(manifest), *args]
    start = time.perf_counter()
    # cwd=src: the child imports form_handler from there, before any installed copy.
    proc = subprocess.Popen(command, cwd=src, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, text=True)
    last = ""
    assert proc.stdout is not None
    for line in proc.stdout:  # read as it comes: a dry run of the old code prints one line per person
        last = line.strip()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"notify exited {proc.returncode} ({src}): {last}")
    return Measured(seconds, usage.ru_maxrss / 1024, last)  # ru_maxrss is in KiB on Linux


class _Discard:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 Message accepted"


def send_run(src: Path, ledger: Path, manifest: Path, folder: Path) -> Measured:
    """The real notify, unpaced, on a copy of the ledger, against a local SMTP server that discards."""
    from aiosmtpd.controller import Controller

    sys.path.insert(0, str(ROOT / "tests"))
    from mailserver import free_port

    copy = folder / f"send-{ledger.name}"
    shutil.copyfile(ledger, copy)  # checkpointed when built: the WAL holds nothing
    handler, port = _Discard(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        env = {"POLICY_SITE_SMTP_HOST": "127.0.0.1", "POLICY_SITE_SMTP_PORT": str(port), "POLICY_SITE_SECRET": "bench"}
        measured = run_notify(src, copy, manifest, env=env)
    finally:
        controller.stop()
        for name in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
            name.unlink(missing_ok=True)
    print(f"  the server took {handler.count:,} messages", file=sys.stderr)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="consents per ledger, comma-separated")
    parser.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the ledgers here")
    parser.add_argument("--baseline", type=Path, default=None, help="a folder holding another form_handler")
    parser.add_argument("--send", action="store_true", help="also time a real, unpaced run against a discarding server")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    folder = args.dir or Path(tempfile.mkdtemp(prefix="notify-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(folder)
    rows: list[tuple[str, list[str]]] = [("consents", [f"{n:,}" for n in sizes]), ("people written to", [])]
    runs: list[tuple[str, Path, tuple[str, ...]]] = [("dry run", ROOT, ("--dry-run",))]
    if args.baseline:
        runs.append(("dry run, baseline", args.baseline, ("--dry-run",)))
    for label, *_ in runs:
        rows += [(f"{label}: time", []), (f"{label}: peak RSS", [])]
    if args.send:
        rows += [("real run: time", []), ("real run: peak RSS", [])]
    table = dict(rows)
    for n in sizes:
        ledger = ledger_for(folder, n)
        for label, src, extra in runs:
            m = run_notify(src, ledger, manifest, *extra)
            print(f"{n:,} {label}: {m.seconds:.2f} s, {m.peak_rss_mb:.0f} MB ({m.last_line})", file=sys.stderr)
            table[f"{label}: time"].append(f"{m.seconds:.2f} s")
            table[f"{label}: peak RSS"].append(f"{m.peak_rss_mb:.0f} MB")
            if src == ROOT:
                table["people written to"].append(f"{int(m.last_line.split()[0]):,}")
        if args.send:
            m = send_run(ROOT, ledger, manifest, folder)
            print(f"{n:,} real run: {m.seconds:.2f} s, {m.peak_rss_mb:.0f} MB ({m.last_line})", file=sys.stderr)
            table["real run: time"].append(f"{m.seconds:.2f} s")
            table["real run: peak RSS"].append(f"{m.peak_rss_mb:.0f} MB")
    width = max(len(k) for k in table)
    for name, cells in table.items():
        print(f"{name:<{width}}  " + "  ".join(f"{c:>10}" for c in cells))


if __name__ == "__main__":
    main()
