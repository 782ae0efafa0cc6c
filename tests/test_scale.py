"""No request costs more on a big ledger: the work of each route at 2,000 and at 20,000 entries, and a link
POST that writes many entries beside a concurrent submission, against a real uvicorn.

Work is SQLite's own count of virtual-machine steps (sqlite3_stmt_status SQLITE_STMTSTATUS_VM_STEP, which
apsw's trace_v2 reports for every statement): unlike time on a shared machine it does not drift, and a scan
of the ledger shows in it as steps in proportion to the entries. Python's share of a request only ever walks
the rows SQLite returns, so it follows the same count.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw
import httpx
import pytest
from faultkit import PAGE, POLICY_ID, VERSION, Server, submission, write_manifest
from mailserver import free_port
from service_client import service_client

from form_handler.consent import keys

from form_handler.consent import tokens
from form_handler.ledger.sqlite.store import ConsentDraft, Ledger
from form_handler.settings import Settings

SECRET = "a secret only this test knows"
KEY = keys.from_secret(SECRET)
SMALL, LARGE = 2_000, 20_000
# The people whose links are followed, the same at every size; each has RECEIPTS confirmed receipts asking
# for change e-mails, and one more, unconfirmed, receipt (what a confirm link is for).
SUBJECTS = ("warm", "confirm", "reconsent", "withdraw", "unsubscribe")
RECEIPTS = 3
OLD = "4" * 64  # the subjects agreed to this earlier version; their reconsent links agree to VERSION


def draft(email: str, *, updates: bool = True, version: str = VERSION) -> ConsentDraft:
    return ConsentDraft(POLICY_ID, version, PAGE, "Hello", email, True, updates, False)


def build(path: Path, entries: int, *, receipts: int = RECEIPTS) -> dict[str, list[str]]:
    """A ledger of about `entries` entries through the ledger's own append path: the subjects first, then
    other people (60% asking for change e-mails, 90% of those confirmed). Returns each subject's receipts,
    the unconfirmed one last."""
    subjects: dict[str, list[str]] = {}
    with Ledger(path) as led:
        with led.transaction() as txn:
            for name in SUBJECTS:
                ids = []
                for i in range(receipts):
                    # Each receipt spells the address differently: a person is the address as compared.
                    receipt = txn.append_consent(draft(f"{name.upper() if i % 2 else name}@example.org", version=OLD))
                    txn.append("confirmation", receipt.receipt_id, policy_id=POLICY_ID)
                    ids.append(receipt.receipt_id)
                ids.append(txn.append_consent(draft(f"{name}@example.org", version=OLD)).receipt_id)
                subjects[name] = ids
        i = 0
        while led.head().count < entries:
            with led.transaction() as txn:
                for _ in range(500):
                    updates = i % 5 < 3
                    receipt = txn.append_consent(draft(f"other{i}@example.org", updates=updates))
                    if updates and i % 10 != 0:
                        txn.append("confirmation", receipt.receipt_id, policy_id=POLICY_ID)
                    i += 1
    return subjects


def link(purpose: tokens.Purpose, receipt_id: str, version: str = VERSION) -> str:
    path = {"withdraw": "withdraw-consent"}.get(purpose, purpose)
    return f"/api/{path}?token={tokens.sign(KEY, purpose, receipt_id, POLICY_ID, version, now=time.time())}"


class StepCounter:
    """Counts the VM steps of every statement on every SQLite connection opened while it is installed, and
    apart those of the group-commit writer's thread (run inside its write transaction, holding the lock)."""

    def __init__(self) -> None:
        self.steps = self.writer_steps = 0
        self._lock = threading.Lock()

    def _profile(self, event: dict[str, object]) -> None:
        # The background mailer's passes (asyncio.to_thread) belong to no request; they run at start-up.
        thread = threading.current_thread().name
        if thread.startswith("asyncio"):
            return
        status = event["stmt_status"]
        assert isinstance(status, dict)
        with self._lock:
            self.steps += int(status["SQLITE_STMTSTATUS_VM_STEP"])
            if thread == "ledger-writer":
                self.writer_steps += int(status["SQLITE_STMTSTATUS_VM_STEP"])

    def _hook(self, connection: apsw.Connection) -> None:
        connection.trace_v2(apsw.SQLITE_TRACE_PROFILE, self._profile)

    def __enter__(self) -> StepCounter:
        apsw.connection_hooks.append(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        apsw.connection_hooks.remove(self._hook)

    def count(self, request: Callable[[], httpx.Response], status: int) -> tuple[int, int]:
        """(all steps, steps in the write transaction) of one request."""
        self.steps = self.writer_steps = 0
        response = request()
        assert response.status_code == status, response.text
        return self.steps, self.writer_steps


def manifest(path: Path) -> str:
    # The faultkit manifest, with the subjects' earlier version listed too.
    doc = json.loads(write_manifest(path).read_text())
    doc["policies"][0]["versions"].insert(0, {"version": OLD, "effective": "2026-01-01", "url": "privacy/v1/",
                                              "current": False})
    path.write_text(json.dumps(doc))
    return str(path)


def subject_link(subjects: dict[str, list[str]], purpose: tokens.Purpose, name: str | None = None) -> str:
    ids = subjects[name or purpose]
    if purpose == "confirm":
        return link("confirm", ids[-1], OLD)  # the unconfirmed receipt, for the version it was given for
    return link(purpose, ids[0])


def route_steps(folder: Path, entries: int) -> dict[str, tuple[int, int]]:
    """The VM steps of one request to each route, after one request of its kind to warm the connections."""
    subjects = build(folder / "ledger.sqlite3", entries)
    settings = Settings(ledger_path=folder / "ledger.sqlite3", manifest=manifest(folder / "m.json"), rate_limit=0,
                        smtp_host="127.0.0.1", smtp_port=free_port(), base_url="https://policies.example",
                        secret=SECRET)
    purposes: tuple[tokens.Purpose, ...] = ("confirm", "reconsent", "unsubscribe", "withdraw")
    with StepCounter() as counter, service_client(settings) as client:
        for purpose in purposes:
            url = subject_link(subjects, purpose, "warm")
            assert (client.get(url).status_code, client.post(url).status_code) == (200, 200)
        client.get("/api/stats"), client.get("/api/ledger/head")
        client.post("/api/feedback", json=submission("warm"))
        made = client.post("/api/feedback", json=submission("to withdraw")).json()
        steps = {
            "GET /api/stats": counter.count(lambda: client.get("/api/stats"), 200),
            "GET /api/ledger/head": counter.count(lambda: client.get("/api/ledger/head"), 200),
            "POST /api/feedback": counter.count(lambda: client.post("/api/feedback", json=submission("x")), 201),
            "POST /api/withdraw": counter.count(lambda: client.post("/api/withdraw", json={
                "receipt_id": made["receipt_id"], "withdraw_token": made["withdraw_token"]}), 200),
        }
        for purpose in purposes:
            url = subject_link(subjects, purpose)
            steps[f"GET {purpose}"] = counter.count(lambda: client.get(url), 200)
            steps[f"POST {purpose}"] = counter.count(lambda: client.post(url), 200)
        return steps


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, tuple[int, int]]]:
    return {n: route_steps(tmp_path_factory.mktemp(f"ledger{n}"), n) for n in (SMALL, LARGE)}


def test_no_route_does_more_work_on_a_ten_times_larger_ledger(steps: dict[int, dict[str, tuple[int, int]]]) -> None:
    grown = {route: (steps[SMALL][route][0], steps[LARGE][route][0]) for route in steps[SMALL]}
    print("\nVM steps at 2k / 20k entries:", grown)
    assert len(grown) == 12
    assert {route: n for route, n in grown.items() if n[1] > 2 * n[0]} == {}


def test_link_posts_hold_the_write_lock_for_their_appends_only(steps: dict[int, dict[str, tuple[int, int]]]) -> None:
    # What runs inside the writer's transaction: the re-check of the entries appended since the decision,
    # and the appends. The deciding (the address's receipts and their entries) ran before, on a read connection.
    held = {route: (steps[SMALL][route][1], steps[LARGE][route][1]) for route in steps[SMALL] if "POST" in route}
    print("\nVM steps inside the write transaction at 2k / 20k entries:", held)
    assert {route: n for route, n in held.items() if n[1] > 2 * n[0]} == {}
    for purpose in ("confirm", "reconsent", "unsubscribe", "withdraw"):
        (post, in_transaction), (get, _) = steps[LARGE][f"POST {purpose}"], steps[LARGE][f"GET {purpose}"]
        assert post - in_transaction >= get  # the reads the GET page makes to decide ran before the transaction


@dataclass
class Timed:
    status: int
    seconds: float


async def timed(client: httpx.AsyncClient, method: str, url: str, json: object = None) -> Timed:
    started = time.perf_counter()
    r = await client.request(method, url, json=json)
    return Timed(r.status_code, time.perf_counter() - started)


def test_link_post_writing_a_hundred_entries_does_not_hold_up_a_submission(tmp_path: Path) -> None:
    # Each subject has 101 receipts among 20,000 entries: its withdraw and unsubscribe links write 101 entries
    # each. Deciding inside the write transaction, as before, held submissions beside it up for 0.15-0.45 s here.
    ledger = tmp_path / "ledger.sqlite3"
    subjects = build(ledger, LARGE, receipts=100)
    env = {"POLICY_SITE_SECRET": SECRET, "POLICY_SITE_SMTP_PORT": str(free_port())}
    server = Server(tmp_path, ledger, Path(manifest(tmp_path / "m.json")), env=env)
    delays = (0.0, 0.005, 0.01, 0.02, 0.04, 0.08)

    async def run() -> tuple[list[Timed], list[Timed], list[Timed]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            await server.ready()
            alone = [await timed(client, "POST", "/api/feedback", json=submission(f"alone {i}")) for i in range(5)]
            links, beside = [], []
            for purpose, name in (("unsubscribe", "unsubscribe"), ("withdraw", "withdraw"), ("unsubscribe", "confirm")):
                url = link(purpose, subjects[name][0])

                async def later(delay: float, i: int) -> Timed:
                    await asyncio.sleep(delay)
                    return await timed(client, "POST", "/api/feedback", json=submission(f"beside {i}"))

                answers = await asyncio.gather(timed(client, "POST", url), *(later(d, i) for i, d in enumerate(delays)))
                links.append(answers[0])
                beside.extend(answers[1:])
            return alone, links, beside

    server.start()
    try:
        alone, links, beside = asyncio.run(run())
    finally:
        server.terminate()
    print(f"\nfeedback alone: median {statistics.median(t.seconds for t in alone) * 1000:.1f} ms; link POSTs "
          f"{[round(t.seconds * 1000, 1) for t in links]} ms; feedback beside them: "
          f"{sorted(round(t.seconds * 1000, 1) for t in beside)} ms")
    assert [t.status for t in links] == [200] * 3 and {t.status for t in beside} == {201}
    with Ledger(ledger, readonly=True) as led:
        kinds = led.connection.execute("SELECT count(*) FROM entries WHERE kind = 'withdrawal'").fetchall()[0][0]
    assert kinds == 3 * 101
    assert max(t.seconds for t in beside) < 0.25
