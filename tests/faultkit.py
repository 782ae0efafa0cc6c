"""Shared parts of the fault, hostile-input and fuzz tests: a real uvicorn process, a manifest, clients.

Everything stays on 127.0.0.1 and every wait is bounded, so a broken service fails a test instead of
hanging it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

POLICY_ID = "privacy"
# Any sha256 hex works: the service only checks that the manifest lists it.
VERSION = "5" * 64
PAGE = "/feedback/"
CLI = str(Path(sys.executable).with_name("policy-site"))
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def record(name: str, figures: dict[str, object]) -> None:
    """Print the figures and keep them in test-artifacts/faults.json (the README quotes them)."""
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "faults.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_manifest(path: Path) -> Path:
    """A policy-versions.json listing one policy with one current version."""
    path.write_text(json.dumps({"policies": [{
        "id": POLICY_ID, "title": "Privacy Policy", "url": "privacy/", "version": VERSION, "changes": [],
        "versions": [{"version": VERSION, "effective": "2026-11-20", "url": "privacy/", "current": True}],
    }]}), encoding="utf-8")
    return path


def submission(message: str) -> dict[str, object]:
    """A valid JSON submission; the message makes it recognisable in the ledger."""
    return {"message": message, "policy_id": POLICY_ID, "policy_version": VERSION, "page": PAGE}


def uvicorn_command(port: int) -> list[str]:
    """The README's command for running the API alone, word for word (uvicorn from this interpreter's folder).

    --no-proxy-headers: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1, so any local client
    could pick the address the rate limit counts; POLICY_SITE_FORWARDED_ALLOW_IPS is the only trust."""
    return [str(Path(sys.executable).with_name("uvicorn")), "form_handler.web.app:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--no-proxy-headers"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`uvicorn form_handler.web.app:app` as a real child process, started and stopped by the test."""

    def __init__(self, workdir: Path, ledger: Path, manifest: Path, *, workers: int = 1,
                 env: dict[str, str] | None = None, log_level: str | None = "warning") -> None:
        self.workdir, self.ledger, self.workers, self.log_level = workdir, ledger, workers, log_level
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "POLICY_SITE_LEDGER": str(ledger), "POLICY_SITE_MANIFEST": str(manifest),
                    "POLICY_SITE_RATE_LIMIT": "0", **(env or {})}
        self.log = workdir / "uvicorn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        cmd = uvicorn_command(self.port)
        if self.log_level is not None:
            cmd += ["--log-level", self.log_level]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until /api/healthz answers at all (any status: a 503 ledger is still a running service)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise AssertionError(f"uvicorn exited with {self.proc and self.proc.returncode}:\n{self.tail()}")
                try:
                    await client.get(self.url + "/api/healthz")
                    return
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        raise AssertionError(f"uvicorn did not answer within {timeout} s:\n{self.tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> float:
        """SIGTERM and wait; returns the seconds the process took to exit by itself."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        return time.monotonic() - started

    def stop(self) -> None:
        """Make sure nothing is left running (used in finally blocks)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Outcome:
    """What the clients saw: acknowledged receipts by message, and everything else counted."""

    acked: dict[str, str] = field(default_factory=dict)
    unacked: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return len(self.acked) + len(self.unacked)


async def submit_all(url: str, messages: Iterable[str], *, clients: int, deadline: float,
                     allowed: frozenset[int] = frozenset({201, 503}),
                     retry_refused: Callable[[], bool] = lambda: True,
                     outcome: Outcome | None = None) -> Outcome:
    """Send each message once from `clients` concurrent connections.

    A refused connection means the request never left the client, so it is retried (the server is
    restarting). Any later failure leaves the submission unacknowledged and it is never retried: a
    retry could store it twice, which is exactly what the test must be able to see.
    """
    out = outcome if outcome is not None else Outcome()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty() and time.monotonic() < deadline:
            message = queue.get_nowait()
            while True:
                try:
                    r = await client.post(url + "/api/feedback", json=submission(message))
                except httpx.ConnectError:
                    if retry_refused() and time.monotonic() < deadline:
                        await asyncio.sleep(0.02)
                        continue
                    out.errors["refused"] += 1
                    out.unacked.append(message)
                    break
                except httpx.TransportError as e:
                    out.errors[type(e).__name__] += 1
                    out.unacked.append(message)
                    break
                out.statuses[r.status_code] += 1
                if r.status_code not in allowed:
                    out.unexpected.append(f"{r.status_code}: {r.text[:200]}")
                if r.status_code == 201:
                    out.acked[message] = r.json()["receipt_id"]
                else:
                    out.unacked.append(message)
                break

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(15.0, connect=2.0)) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return out


def verify(ledger: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `policy-site ledger verify` on the file."""
    return subprocess.run([CLI, "ledger", "verify", "--ledger", str(ledger), *args],
                          capture_output=True, text=True, timeout=120)


@dataclass(frozen=True)
class Stored:
    """What the ledger file holds, read straight from SQLite after the server has stopped."""

    entries: int
    messages: Counter[str | None]  # None: a consent entry without its personal row
    receipts: dict[str, str | None]  # receipt_id -> message
    integrity: str


def read_ledger(path: Path) -> Stored:
    from form_handler.ledger.sqlite.store import Ledger

    with Ledger(path) as ledger:
        conn = ledger.connection
        integrity = str(conn.execute("PRAGMA integrity_check").fetchall()[0][0])
        entries = int(conn.execute("SELECT count(*) FROM entries").fetchall()[0][0])  # type: ignore[arg-type]
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT e.receipt_id, p.message FROM entries e LEFT JOIN personal p ON p.receipt_id = e.receipt_id"
            " WHERE e.kind = 'consent'"
        ).fetchall()
    return Stored(entries, Counter(m for _, m in rows), {r: m for r, m in rows}, integrity)


def losses(outcome: Outcome, stored: Stored) -> tuple[list[str], list[str]]:
    """Acknowledged submissions missing from the ledger (or under another receipt), and messages stored twice."""
    lost = [m for m, rid in outcome.acked.items() if stored.receipts.get(rid) != m]
    duplicates = [m for m, n in stored.messages.items() if m is not None and n > 1]
    return lost, duplicates
