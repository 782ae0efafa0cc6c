"""The service as deployed: `uvicorn form_handler.web.app:app` in a real child process, over real HTTP.

Clients send from 127.0.0.2, a loopback address the server's own (127.0.0.1) differs from, so the
check that the ledger never holds the client's address looks for an address nothing else would put there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx

from faultkit import PAGE, POLICY_ID, VERSION, Server, free_port, submission, verify, write_manifest
from form_handler.consent import keys
from form_handler.consent import tokens
from form_handler.ledger.sqlite.store import ConsentDraft, Ledger

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


SECRET = "a secret only this test knows"
PREFILL = 3000
# The statuses each kind of request may get; anything else (any 5xx above all) fails the test.
ALLOWED = {
    "feedback": {201}, "feedback+updates": {201}, "withdraw": {200}, "stats": {200}, "head": {200},
    "healthz": {200}, "GET confirm": {200, 410}, "POST confirm": {200, 410},
    "GET unsubscribe": {200}, "POST unsubscribe": {200},
}


def draft(message: str, email: str) -> ConsentDraft:
    return ConsentDraft(POLICY_ID, VERSION, PAGE, message, email, True, True, False)


def test_100_concurrent_mixed_requests_get_no_5xx_and_the_ledger_verifies(tmp_path: Path) -> None:
    # Reads (stats, head, link pages) run in worker threads at once beside the writer: each must get a
    # read connection of its own (a shared one gave 500, apsw.ThreadingViolationError).
    ledger = tmp_path / "ledger.sqlite3"
    with Ledger(ledger) as filling, filling.transaction() as txn:  # reads that take a while overlap more
        for i in range(PREFILL):
            txn.append_consent(draft(f"earlier {i}", f"e{i}@example.org"))
    env = {"POLICY_SITE_SECRET": SECRET, "POLICY_SITE_RATE_LIMIT": "0", "POLICY_SITE_SMTP_PORT": str(free_port())}
    server = Server(tmp_path, ledger, write_manifest(tmp_path / "m.json"), env=env)
    key = keys.from_secret(SECRET)

    def link(purpose: tokens.Purpose, receipt_id: str) -> str:
        return f"/api/{purpose}?token={tokens.sign(key, purpose, receipt_id, POLICY_ID, VERSION, now=time.time())}"

    async def run() -> tuple[list[tuple[str, httpx.Response]], list[str]]:
        async with httpx.AsyncClient(transport=client_transport(), timeout=30) as client:
            await server.ready()
            made = await asyncio.gather(*(client.post(server.url + "/api/feedback", json={
                **submission(f"setup {i}"), "email": f"p{i}@example.org", "consent_updates": True}) for i in range(20)))
            receipts = [r.json() for r in made]
            mix: list[tuple[str, str, str, dict[str, object] | None]] = []
            for i in range(100):
                r, other = receipts[i // 10], receipts[10 + i // 10]
                mix.append([
                    ("feedback", "POST", "/api/feedback", submission(f"mixed {i}")),
                    ("feedback+updates", "POST", "/api/feedback",
                     {**submission(f"mixed {i}"), "email": f"m{i}@example.org", "consent_updates": True}),
                    ("withdraw", "POST", "/api/withdraw",
                     {"receipt_id": other["receipt_id"], "withdraw_token": other["withdraw_token"]}),
                    ("stats", "GET", "/api/stats", None), ("head", "GET", "/api/ledger/head", None),
                    ("healthz", "GET", "/api/healthz", None),
                    ("GET confirm", "GET", link("confirm", r["receipt_id"]), None),
                    ("POST confirm", "POST", link("confirm", r["receipt_id"]), None),
                    ("GET unsubscribe", "GET", link("unsubscribe", r["receipt_id"]), None),
                    ("POST unsubscribe", "POST", link("unsubscribe", r["receipt_id"]), None),
                ][i % 10])
            answers = await asyncio.gather(*(client.request(method, server.url + path, json=body)
                                             for _, method, path, body in mix))
            return [(kind, answer) for (kind, *_), answer in zip(mix, answers)], [r["receipt_id"] for r in receipts]

    server.start()
    try:
        started = time.monotonic()
        answered, setup = asyncio.run(run())
        took = time.monotonic() - started
    finally:
        server.terminate()
    wrong = [f"{kind}: {r.status_code} {r.text[:120]}" for kind, r in answered if r.status_code not in ALLOWED[kind]]
    assert wrong == [], f"{len(wrong)} of 100 wrong; server log:\n{server.tail()}"
    assert Counter(kind for kind, _ in answered) == Counter({kind: 10 for kind in ALLOWED}) and took < 30
    result = verify(ledger)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every acknowledged write is there, once: the consents, 10 withdrawals, a confirmation per 200 to POST
    # confirm, and at most one unsubscribe per receipt (none when it came before the confirmation).
    acked = set(setup) | {r.json()["receipt_id"] for kind, r in answered if kind.startswith("feedback")}
    confirmed = sum(1 for kind, r in answered if kind == "POST confirm" and r.status_code == 200)
    with Ledger(ledger, readonly=True) as reader:
        exported = {row["receipt_id"] for row in reader.export()}
        stored = dict(reader.read(lambda view: view.connection.execute(
            "SELECT kind || CASE WHEN kind = 'withdrawal' AND consent_updates IS NOT NULL THEN ' of updates'"
            " ELSE '' END, count(*) FROM entries GROUP BY 1").fetchall()))
    assert acked <= exported and len(acked) == 40
    assert {k: stored.get(k) for k in ("consent", "withdrawal", "confirmation")} == {
        "consent": PREFILL + 40, "withdrawal": 10, "confirmation": confirmed or None}
    assert stored.get("withdrawal of updates", 0) <= confirmed
    assert result.stdout.startswith(f"entries: {sum(stored.values())}\n")

RATE = 3


def posts_forwarded_for(server: Server, forwarded: list[str]) -> list[int]:
    """Start the server, POST /api/feedback from 127.0.0.1 once per X-Forwarded-For value; the statuses."""

    async def run() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            await server.ready()
            return [(await client.post(server.url + "/api/feedback", json=submission(f"from {ip}"),
                                       headers={"X-Forwarded-For": ip})).status_code for ip in forwarded]

    server.start()
    try:
        return asyncio.run(run())
    finally:
        server.terminate()


def test_uvicorn_ignores_a_spoofed_forwarded_for_and_the_rate_limit_holds(tmp_path: Path) -> None:
    # log_level=None: exactly the README's command, whose --no-proxy-headers turns off uvicorn's own trust in
    # X-Forwarded-For from 127.0.0.1; without it each new spoofed address would get a fresh allowance.
    server = Server(tmp_path, tmp_path / "ledger.sqlite3", write_manifest(tmp_path / "m.json"), log_level=None,
                    env={"POLICY_SITE_RATE_LIMIT": str(RATE)})
    statuses = posts_forwarded_for(server, [f"203.0.113.{i}" for i in range(RATE + 2)])
    assert statuses == [201] * RATE + [429, 429], server.tail()


def test_uvicorn_behind_a_trusted_proxy_limits_each_forwarded_client(tmp_path: Path) -> None:
    server = Server(tmp_path, tmp_path / "ledger.sqlite3", write_manifest(tmp_path / "m.json"), log_level=None,
                    env={"POLICY_SITE_RATE_LIMIT": str(RATE), "POLICY_SITE_FORWARDED_ALLOW_IPS": "127.0.0.1"})
    distinct = [f"203.0.113.{i}" for i in range(2 * RATE)]
    statuses = posts_forwarded_for(server, distinct + ["198.51.100.7"] * (RATE + 1))
    assert statuses == [201] * (3 * RATE) + [429], server.tail()


def test_uvicorn_refuses_a_host_the_service_is_not_published_at(tmp_path: Path) -> None:
    server = Server(tmp_path, tmp_path / "ledger.sqlite3", write_manifest(tmp_path / "m.json"), log_level=None)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            await server.ready()
            return [await client.get(server.url + "/api/healthz", headers={"Host": host})
                    for host in ("evil.example", f"evil.example:{server.port}", f"localhost:{server.port}")]

    server.start()
    try:
        evil, evil_port, local = asyncio.run(run())
    finally:
        server.terminate()
    assert (evil.status_code, evil_port.status_code, local.status_code) == (400, 400, 200)
    assert "host" in evil.json()["errors"] and evil.headers["x-content-type-options"] == "nosniff"
