"""`policy-site notify` at scale: time and peak memory of a dry run (and, with --send, a real run).

    .venv/bin/python -m bench.notify_memory [--sizes 10000,100000] [--dir bench/out/scale] [--send]
                                            [--baseline /tmp/before]

bench/scale_bench.py measures the dry run at every size beside the other commands; this keeps the modes it does not
have. The ledgers are scale_bench's (built once through the ledger's own API, kept in --dir): 60% of the people
ask for e-mails about changes and 90% of those confirm, a tenth of those already had the notice.
`notify` runs as a child process; its peak memory is the child's own peak RSS (os.wait4's rusage).
--baseline runs the same command from another copy of the code as well, side by side, e.g. the last
commit's: `mkdir /tmp/before && git archive HEAD form_handler | tar -x -C /tmp/before`.
--send also runs the real notify, unpaced, against a local SMTP server that discards each message,
on a copy of the ledger. The ledgers stay in --dir (scale_bench's) for later runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import scale_bench

ROOT = Path(__file__).resolve().parent.parent


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
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "out" / "scale",
                        help="scale_bench.py's ledgers: reused when there, built and kept when not")
    parser.add_argument("--baseline", type=Path, default=None, help="a folder holding another form_handler")
    parser.add_argument("--send", action="store_true", help="also time a real, unpaced run against a discarding server")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    folder = args.dir
    folder.mkdir(parents=True, exist_ok=True)
    manifest = scale_bench.write_manifest(folder / "policy-versions.json")
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
        ledger = scale_bench.ledger_for(folder, n)
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
