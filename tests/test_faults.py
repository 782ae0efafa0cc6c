"""Faults against a real `uvicorn form_handler.web.app:app`: kill -9 under load, a full disk, a read-only
ledger and SIGTERM under load. Through all of them every 2xx must stay in the ledger exactly once.

Counts can be lowered while developing: FAULT_SUBMISSIONS, FAULT_KILLS, FAULT_SEED.
The figures are printed and written to test-artifacts/faults.json (they go into the README).
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from faultkit import Outcome, Server, losses, read_ledger, record, submission, submit_all, verify, write_manifest

def unique_messages(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{prefix} {run} #{i}" for i in range(n)]


def assert_intact(ledger: Path, outcome: Outcome, refused: Sequence[str] = ()) -> dict[str, int]:
    """verify passes, nothing half-written, every 2xx stored once, nothing refused stored."""
    result = verify(ledger)
    assert result.returncode == 0, result.stdout + result.stderr
    stored = read_ledger(ledger)
    assert stored.integrity == "ok"
    # A consent entry without its personal row would be half an entry.
    assert None not in stored.messages
    lost, duplicates = losses(outcome, stored)
    assert not lost, f"{len(lost)} acknowledged submissions are not in the ledger: {lost[:5]}"
    assert not duplicates, f"{len(duplicates)} submissions are stored more than once: {duplicates[:5]}"
    assert not [m for m in refused if m in stored.messages], "a refused submission was stored"
    assert not outcome.unexpected, outcome.unexpected[:5]
    return {"entries": stored.entries, "lost": len(lost), "duplicates": len(duplicates),
            "unacknowledged_but_stored": sum(1 for m in outcome.unacked if m in stored.messages)}


async def kill_campaign(server: Server, messages: list[str], kills: int, rng: random.Random) -> tuple[Outcome, int]:
    """Load from 50 clients; kill -9 the server at random points of progress and restart it each time."""
    server.start()
    await server.ready()
    outcome = Outcome()
    margin = max(1, len(messages) // 40)
    points = sorted(rng.sample(range(margin, len(messages) - margin), kills))
    deadline = time.monotonic() + 360
    load = asyncio.create_task(submit_all(server.url, messages, clients=50, deadline=deadline, outcome=outcome))
    done = 0
    for point in points:
        while outcome.finished < point and not load.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        if load.done() or time.monotonic() >= deadline:
            break
        # A random moment within the next few milliseconds of commits, not only between batches.
        await asyncio.sleep(rng.uniform(0, 0.03))
        server.kill9()
        done += 1
        server.start()
        await server.ready()
    await load
    server.terminate()
    return outcome, done


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_kill9_during_load_loses_no_acknowledged_submission(tmp_path: Path, workers: int) -> None:
    # The full campaign on one worker; a quarter of it on two (their writers queue on a shared lock).
    total = int(os.environ.get("FAULT_SUBMISSIONS", "2000")) // workers**2
    planned = max(2, int(os.environ.get("FAULT_KILLS", "20")) // workers**2)
    seed = int(os.environ.get("FAULT_SEED", str(time.time_ns() % 10**6)))
    ledger = tmp_path / "ledger.sqlite3"
    server = Server(tmp_path, ledger, write_manifest(tmp_path / "policy-versions.json"), workers=workers)
    messages = unique_messages("kill9", total)
    try:
        outcome, kills = asyncio.run(kill_campaign(server, messages, planned, random.Random(seed)))
    finally:
        server.stop()
    assert outcome.finished == total, f"only {outcome.finished} of {total} submissions finished in time"
    figures = assert_intact(ledger, outcome)
    record(f"kill9_workers{workers}", {"seed": seed, "submissions": total, "clients": 50, "kills": kills,
                     "acknowledged": len(outcome.acked), "unacknowledged": len(outcome.unacked),
                     "statuses": dict(outcome.statuses), "client_errors": dict(outcome.errors), **figures})
    # The last planned points can fall after the final submissions finished; most must have happened.
    assert kills >= planned * 0.8
    assert len(outcome.acked) > total // 2


@pytest.mark.slow
def test_sigterm_during_load_finishes_or_refuses_cleanly(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    server = Server(tmp_path, ledger, write_manifest(tmp_path / "policy-versions.json"))
    stopping = False

    async def run() -> tuple[Outcome, float]:
        nonlocal stopping
        server.start()
        await server.ready()
        outcome = Outcome()
        load = asyncio.create_task(submit_all(
            server.url, unique_messages("sigterm", 3000), clients=50, deadline=time.monotonic() + 120,
            retry_refused=lambda: not stopping, outcome=outcome))
        while outcome.finished < 200 and not load.done():
            await asyncio.sleep(0.005)
        assert server.proc is not None
        stopping = True
        started = time.monotonic()
        server.proc.terminate()
        while server.proc.poll() is None and time.monotonic() - started < 20:
            await asyncio.sleep(0.01)
        exit_after = time.monotonic() - started
        await load
        return outcome, exit_after

    try:
        outcome, exit_after = asyncio.run(run())
        returncode = server.proc.poll() if server.proc else None
    finally:
        server.stop()
    figures = assert_intact(ledger, outcome)
    record("sigterm", {"acknowledged": len(outcome.acked), "unacknowledged": len(outcome.unacked),
                       "statuses": dict(outcome.statuses), "client_errors": dict(outcome.errors),
                       "exit_seconds": round(exit_after, 2), **figures})
    # uvicorn >= 0.29 re-raises the signal it handled once it has shut down cleanly: -15, not a crash.
    assert returncode in (0, -signal.SIGTERM), f"uvicorn exited with {returncode}:\n{server.tail()}"
    assert exit_after < 15
    # Some submissions were in the balance when the signal came.
    assert len(outcome.unacked) > 0 and len(outcome.acked) >= 200


@contextmanager
def small_filesystem(tmp_path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` (or a loop-mounted ext4 image when tmpfs is not allowed), unmounted afterwards."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    attempts = [["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(mnt)]]
    image = tmp_path / "fs.img"
    if shutil.which("mkfs.ext4"):
        attempts.append(["sh", "-c", f"truncate -s {size_mb}M {image} && mkfs.ext4 -q -F {image}"
                                     f" && mount -o loop {image} {mnt}"])
    for cmd in attempts:
        if subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0:
            break
    else:
        message = "mounting a small filesystem needs root (mount -t tmpfs or a loop device)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=60)


def remount(mnt: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True, capture_output=True, timeout=60)


def fill(path: Path, limit: int = 1 << 30) -> int:
    """Write zeros to `path` until the filesystem has no space left; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while written < limit:
            try:
                written += os.write(fd, chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                # tmpfs may still take a few bytes; one more small pass takes the rest.
                for size in (4096, 512, 1):
                    while True:
                        try:
                            written += os.write(fd, b"\0" * size)
                        except OSError:
                            break
                return written
    finally:
        os.close(fd)
    raise AssertionError(f"{path}: wrote {limit} bytes without filling the filesystem")


async def post(client: httpx.AsyncClient, url: str, message: str, outcome: Outcome) -> int:
    r = await client.post(url + "/api/feedback", json=submission(message))
    outcome.statuses[r.status_code] += 1
    if r.status_code == 201:
        outcome.acked[message] = r.json()["receipt_id"]
    else:
        outcome.unacked.append(message)
        if r.status_code != 503:
            outcome.unexpected.append(f"{r.status_code}: {r.text[:200]}")
    return r.status_code


def test_full_disk_answers_503_and_recovers_when_space_returns(tmp_path: Path) -> None:
    outcome = Outcome()
    with small_filesystem(tmp_path, 8) as fs:
        ledger = fs / "ledger.sqlite3"
        server = Server(tmp_path, ledger, write_manifest(tmp_path / "policy-versions.json"))

        async def run() -> tuple[int, int]:
            server.start()
            await server.ready()
            async with httpx.AsyncClient(timeout=15) as client:
                for m in unique_messages("before full", 5):
                    assert await post(client, server.url, m, outcome) == 201
                fill(fs / "filler")
                # SQLite reuses WAL space for a while; go on until the disk refuses (bounded).
                tries = 0
                for m in unique_messages("while full", 2000):
                    tries += 1
                    if await post(client, server.url, m, outcome) == 503:
                        break
                refused_more = [await post(client, server.url, m, outcome) for m in unique_messages("still full", 3)]
                (fs / "filler").unlink()
                assert await post(client, server.url, "after space returned", outcome) == 201, server.tail()
            server.terminate()
            return tries, refused_more.count(503)

        try:
            tries, still_refused = asyncio.run(run())
        finally:
            server.stop()
        figures = assert_intact(ledger, outcome, refused=outcome.unacked)
    record("full_disk", {"statuses": dict(outcome.statuses), "submissions_until_503": tries,
                         "refused_while_full": still_refused, **figures})
    assert outcome.statuses[503] >= 1
    assert "after space returned" in outcome.acked


def test_read_only_ledger_answers_503_and_recovers_when_writable(tmp_path: Path) -> None:
    outcome = Outcome()
    with small_filesystem(tmp_path, 8) as fs:
        ledger = fs / "ledger.sqlite3"
        server = Server(tmp_path, ledger, write_manifest(tmp_path / "policy-versions.json"))

        async def run() -> None:
            async with httpx.AsyncClient(timeout=15) as client:
                server.start()
                await server.ready()
                for m in unique_messages("before read-only", 3):
                    assert await post(client, server.url, m, outcome) == 201
                server.terminate()
                # An open file keeps its write access, so the ledger turns read-only across a restart,
                # as when a volume comes back read-only after a fault.
                remount(fs, "ro")
                server.start()
                await server.ready()
                for m in unique_messages("read-only", 3):
                    assert await post(client, server.url, m, outcome) == 503, server.tail()
                remount(fs, "rw")
                assert await post(client, server.url, "writable again", outcome) == 201, server.tail()
                server.terminate()

        try:
            asyncio.run(run())
        finally:
            server.stop()
            remount(fs, "rw")
        figures = assert_intact(ledger, outcome, refused=outcome.unacked)
    record("read_only", {"statuses": dict(outcome.statuses), **figures})
