"""The service as deployed: `uvicorn form_handler.app:app` in a real child process, over real HTTP.

Clients send from 127.0.0.2, a loopback address the server's own (127.0.0.1) differs from, so the
check that the ledger never holds the client's address looks for an address nothing else would put there.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from faultkit import PAGE, POLICY_ID, VERSION, Server, submission, verify, write_manifest
from form_handler.ledger import Ledger

CLIENT_IP = "127.0.0.2"


def client_transport() -> httpx.AsyncHTTPTransport:
    return httpx.AsyncHTTPTransport(local_address=CLIENT_IP, limits=httpx.Limits(max_connections=200))


def ledger_bytes(ledger: Path) -> bytes:
    """The ledger file and its -wal/-shm companions, as raw bytes."""
    return b"".join(p.read_bytes() for p in sorted(ledger.parent.glob(ledger.name + "*")))


def test_submissions_over_http_appear_in_export_and_verify(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    server = Server(tmp_path, ledger, write_manifest(tmp_path / "m.json"), env={"POLICY_SITE_ADMIN_TOKEN": "tok"})

    async def run() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(transport=client_transport(), timeout=10) as client:
            await server.ready()
            sent = [
                await client.post(server.url + "/api/feedback", json={**submission("json one"), "email": "a@example.org"}),
                await client.post(server.url + "/api/feedback", data={**submission("form two"), "consent_third_parties": "on"}),
                await client.post(server.url + "/api/feedback", json={**submission("refused"), "website": "x"}),
            ]
            export = await client.get(server.url + "/api/export", headers={"Authorization": "Bearer tok"})
            return sent, export

    server.start()
    try:
        sent, export = asyncio.run(run())
    finally:
        server.terminate()
    assert [r.status_code for r in sent] == [201, 200, 400]
    assert "Your feedback was recorded" in sent[1].text
    rows = [json.loads(line) for line in export.text.splitlines()]
    assert [r["message"] for r in rows] == ["json one", "form two"]
    assert all(r["policy_id"] == POLICY_ID and r["policy_version"] == VERSION and r["page"] == PAGE for r in rows)
    result = verify(ledger)
    assert result.returncode == 0 and "entries: 2" in result.stdout
    assert CLIENT_IP.encode() not in ledger_bytes(ledger)


def test_two_workers_take_200_concurrent_submissions_exactly_once(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    server = Server(tmp_path, ledger, write_manifest(tmp_path / "m.json"), workers=2)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=client_transport(), timeout=30) as client:
            await server.ready()
            return await asyncio.gather(*(
                client.post(server.url + "/api/feedback", json=submission(f"message {i}")) for i in range(200)
            ))

    server.start()
    try:
        responses = asyncio.run(run())
    finally:
        server.terminate()
    assert [r.status_code for r in responses] == [201] * 200
    receipts = {r.json()["receipt_id"] for r in responses}
    with Ledger(ledger, readonly=True) as reader:
        report = reader.verify()
        stored = {row["receipt_id"] for row in reader.export()}
    assert report.ok and report.count == 200 and stored == receipts
    raw = ledger_bytes(ledger)
    assert CLIENT_IP.encode() not in raw and b"127.0.0.1" not in raw
