"""The PostgreSQL ledger under real processes: two uvicorn instances on one database, one killed, the server restarted.

Each check counts what the clients were told (201 = acknowledged) against what the database holds afterwards:
no acknowledged submission lost, none stored twice, and `policy-site ledger verify` passes.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from faultkit import CLI, Outcome, Server, Stored, losses, record, submit_all, write_manifest
from pgserver import PgServer

from form_handler.ledger import open_ledger
from form_handler.ledger.postgres.store import CONNECT_WAIT

pytestmark = pytest.mark.slow


def read_store(url: str) -> Stored:
    """What the database holds, through the ledger's own export (consents and their messages)."""
    led = open_ledger(url)
    try:
        rows = list(led.export())
    finally:
        led.close()
    consents = [(r["receipt_id"], r["message"]) for r in rows if r["kind"] == "consent"]
    return Stored(len(rows), Counter(m for _, m in consents), dict(consents), "ok")


def verify(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "ledger", "verify", "--ledger", url], capture_output=True, text=True, timeout=120)


def two_instances(tmp_path: Path, url: str) -> list[Server]:
    manifest = write_manifest(tmp_path / "policy-versions.json")
    return [Server(tmp_path, url, manifest, env={"POLICY_SITE_SECRET": "s" * 32}) for _ in range(2)]  # type: ignore[arg-type]


def assert_intact(url: str, outcome: Outcome) -> Stored:
    stored = read_store(url)
    lost, duplicates = losses(outcome, stored)
    assert lost == [] and duplicates == [], (lost[:5], duplicates[:5])
    result = verify(url)
    assert result.returncode == 0 and "chain: ok" in result.stdout, result.stdout + result.stderr
    return stored


def test_two_instances_share_one_chain_500_concurrent_submissions(tmp_path: Path, postgres: PgServer) -> None:
    url = postgres.create_database()
    servers = two_instances(tmp_path, url)
    try:
        async def run() -> list[Outcome]:
            for s in servers:
                s.start()
            await asyncio.gather(*(s.ready() for s in servers))
            deadline = time.monotonic() + 120
            return list(await asyncio.gather(*(
                submit_all(s.url, [f"{i}-{n}" for n in range(250)], clients=25, deadline=deadline)
                for i, s in enumerate(servers))))

        outcomes = asyncio.run(run())
    finally:
        for s in servers:
            s.stop()
    outcome = Outcome({k: v for o in outcomes for k, v in o.acked.items()})
    assert all(o.statuses == Counter({201: 250}) for o in outcomes), [o.statuses for o in outcomes]
    stored = assert_intact(url, outcome)
    assert stored.entries == 500 and len(outcome.acked) == 500
    record("postgres two instances", {"submissions": 500, "entries": stored.entries})


def test_an_instance_killed_under_load_loses_nothing_acknowledged(tmp_path: Path, postgres: PgServer) -> None:
    url = postgres.create_database()
    servers = two_instances(tmp_path, url)
    try:
        async def run() -> list[Outcome]:
            for s in servers:
                s.start()
            await asyncio.gather(*(s.ready() for s in servers))
            deadline = time.monotonic() + 120

            async def kill_soon() -> None:
                await asyncio.sleep(0.6)
                servers[0].kill9()

            results = await asyncio.gather(
                submit_all(servers[0].url, [f"a-{n}" for n in range(400)], clients=20, deadline=deadline,
                           retry_refused=lambda: False),
                submit_all(servers[1].url, [f"b-{n}" for n in range(300)], clients=20, deadline=deadline),
                kill_soon(),
            )
            return [results[0], results[1]]

        outcomes = asyncio.run(run())
    finally:
        for s in servers:
            s.stop()
    outcome = Outcome({k: v for o in outcomes for k, v in o.acked.items()})
    assert outcomes[0].unacked, "the kill came after every submission was answered; nothing was tested"
    assert outcomes[1].statuses == Counter({201: 300})
    stored = assert_intact(url, outcome)
    record("postgres instance killed", {"acknowledged": len(outcome.acked), "unanswered": len(outcomes[0].unacked),
                                        "stored": sum(stored.messages.values())})


def test_postgres_down_answers_503_and_the_service_recovers_by_itself(tmp_path: Path, postgres: PgServer) -> None:
    url = postgres.create_database()
    server = two_instances(tmp_path, url)[0]
    outcome = Outcome()
    try:
        async def run() -> None:
            server.start()
            await server.ready()
            deadline = time.monotonic() + 120
            down = threading.Event()

            def outage() -> None:
                time.sleep(0.5)
                postgres.pg_ctl("stop", "-m", "fast", "-w")
                down.set()
                time.sleep(CONNECT_WAIT + 2.5)  # longer than a request waits for a connection: 503s, not waits
                postgres.pg_ctl("start", "-w", "-l", str(postgres.log), "-o", postgres._options)
                time.sleep(0.5)
                postgres.restart()  # pg_ctl restart -m fast, under load as well

            thread = threading.Thread(target=outage)
            thread.start()
            n = 0
            while thread.is_alive() or n < 3:
                await submit_all(server.url, [f"m-{n}-{i}" for i in range(20)], clients=10, deadline=deadline,
                                 outcome=outcome)
                n += 1
                await asyncio.sleep(0.05)
            thread.join()
            # Back without restarting the service: every submission is acknowledged again.
            after = await submit_all(server.url, [f"after-{i}" for i in range(50)], clients=10, deadline=deadline)
            assert after.statuses == Counter({201: 50}), after.statuses
            outcome.acked.update(after.acked)

        asyncio.run(run())
    finally:
        server.stop()
    assert outcome.statuses[503] > 0 and outcome.statuses[201] > 0, outcome.statuses
    assert set(outcome.statuses) <= {201, 503}, outcome.unexpected[:3]
    assert_intact(url, outcome)
    record("postgres restarted", dict(outcome.statuses))
