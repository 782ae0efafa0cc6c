"""The ledger writer in its own process (form_handler/ledger/sqlite/writer_process.py): real child processes,
real SQLite; refusals, deaths and shutdowns as the service would meet them."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import operator
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from faultkit import Server, losses, read_ledger, submission, submit_all, write_manifest
from ledger_helpers import draft

from form_handler.ledger.contract import AppendConsent
from form_handler.ledger.sqlite.store import Ledger, LedgerTxn
from form_handler.ledger.sqlite.writer_process import ProcessWriter
from form_handler.ledger.types import ConsentDraft, InvalidToken, LedgerError, LedgerRefusal, LedgerUnavailable, Receipt
from form_handler.web.mail_routes import LinkUsed

T = TypeVar("T")


def with_writer(path: Path, body: Callable[[ProcessWriter], Awaitable[T]]) -> T:
    """Run body(writer) on one event loop, the writer started before and closed (drained) on that loop after,
    as the service's lifespan does."""
    async def main() -> T:
        writer = ProcessWriter(path)
        writer.start()
        try:
            return await body(writer)
        finally:
            await writer.aclose()

    return asyncio.run(main())


def entries(path: Path) -> int:
    with Ledger(path, readonly=True) as ledger:
        return ledger.head().count


class HeldWriterLock:
    """The flock every writer of the ledger takes for each batch (writer.py, _PeerLock): holding it here
    keeps the child waiting with its batch, so operations are in flight when the test acts."""

    def __init__(self, ledger: Path) -> None:
        self.fd = os.open(ledger.with_name(ledger.name + ".writer-lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_concurrent_submissions_are_committed_by_one_child_and_chain(tmp_path: Path) -> None:
    async def body(writer: ProcessWriter) -> list[Any]:
        assert writer.spawns == 1
        return await asyncio.gather(*(writer.submit(AppendConsent(draft(message=f"m{i}"))) for i in range(300)),
                                    return_exceptions=True)

    results = with_writer(tmp_path / "ledger.sqlite3", body)
    assert all(isinstance(r, Receipt) for r in results), [r for r in results if not isinstance(r, Receipt)][:3]
    assert sorted(r.seq for r in results) == list(range(1, 301))
    assert len({r.receipt_id for r in results}) == 300
    with Ledger(tmp_path / "ledger.sqlite3", readonly=True) as ledger:
        assert ledger.verify().ok
        # What the child wrote is what the callers were told.
        assert ledger.head().head == max(results, key=lambda r: r.seq).entry_hash


def test_a_refusal_reaches_its_caller_as_itself_and_undoes_only_its_operation(tmp_path: Path) -> None:
    async def body(writer: ProcessWriter) -> list[Any]:
        first = await writer.submit(AppendConsent(draft()))
        return await asyncio.gather(
            writer.submit(AppendConsent(draft(message="before"))),
            writer.submit(operator.methodcaller("withdraw", first.receipt_id, "not-the-token")),
            writer.submit(AppendConsent(draft(message="after"))), return_exceptions=True)

    results = with_writer(tmp_path / "ledger.sqlite3", body)
    assert isinstance(results[0], Receipt) and isinstance(results[2], Receipt)
    assert isinstance(results[1], InvalidToken) and results[1].field == "withdraw_token"
    assert entries(tmp_path / "ledger.sqlite3") == 3


class _HeldBack(LedgerRefusal):
    """A refusal whose __init__ takes other arguments than LedgerRefusal's, with a state of its own."""

    def __init__(self, *, days: int) -> None:
        super().__init__(f"Held back for {days} days.", "days")
        self.days = days


class _Worded(LedgerRefusal):
    """A refusal that words its message itself."""

    def __str__(self) -> str:
        return f"Refused: {self.args[0]}"


def test_refusals_survive_pickling_as_the_writer_process_sends_them() -> None:
    # Answers travel from the child as pickles: a refusal that cannot be rebuilt would reach its caller as a 500.
    for refusal in (InvalidToken("That token is wrong.", "withdraw_token"), LinkUsed("This link was already used."),
                    _HeldBack(days=3), _Worded("too late", "date")):
        back = pickle.loads(pickle.dumps(refusal))
        assert type(back) is type(refusal) and str(back) == str(refusal) and back.args == refusal.args
        assert back.__dict__ == refusal.__dict__
    assert pickle.loads(pickle.dumps(_HeldBack(days=3))).days == 3


def test_one_bad_draft_in_a_run_of_submissions_refuses_only_that_one(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    bad = ConsentDraft("privacy", draft().policy_version, "/feedback/", 5, None, False, False, False)  # type: ignore[arg-type]
    ops = [AppendConsent(draft(message=f"m{i}")) for i in range(2)] + [AppendConsent(bad)] + [
        AppendConsent(draft(message=f"m{i}")) for i in range(2, 4)]

    async def body(writer: ProcessWriter) -> list[Any]:
        held = HeldWriterLock(path)  # so all five reach the child before it can commit any: one run of appends
        tasks = [asyncio.ensure_future(writer.submit(op)) for op in ops]
        await asyncio.sleep(0.3)
        held.release()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = with_writer(path, body)
    assert [type(r).__name__ for r in results] == ["Receipt", "Receipt", "LedgerRefusal", "Receipt", "Receipt"]
    assert isinstance(results[2], LedgerRefusal) and results[2].field == "message"
    assert [r.seq for r in results if isinstance(r, Receipt)] == [1, 2, 3, 4]
    with Ledger(path, readonly=True) as ledger:
        assert ledger.verify().ok and ledger.head().count == 4


def test_an_operation_that_cannot_be_pickled_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    async def body(writer: ProcessWriter) -> Receipt:
        with pytest.raises(TypeError, match="picklable"):
            await writer.submit(lambda txn: txn.append_consent(draft()))
        receipt: Receipt = await writer.submit(functools.partial(LedgerTxn.append_consent, draft=draft()))
        return receipt

    assert with_writer(tmp_path / "ledger.sqlite3", body).seq == 1
    assert entries(tmp_path / "ledger.sqlite3") == 1


def test_a_killed_child_fails_what_it_held_and_the_next_write_starts_another(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"

    async def body(w: ProcessWriter) -> tuple[list[Any], Any, int]:
        await asyncio.gather(*(w.submit(AppendConsent(draft(message=f"ok{i}"))) for i in range(3)))
        held = HeldWriterLock(path)
        doomed = [asyncio.ensure_future(w.submit(AppendConsent(draft(message=f"lost{i}")))) for i in range(5)]
        await asyncio.sleep(0.3)  # the child now waits for the lock with these five
        assert w.pid is not None
        os.kill(w.pid, signal.SIGKILL)
        lost = await asyncio.gather(*doomed, return_exceptions=True)
        held.release()
        with pytest.raises(LedgerUnavailable):  # right away: a new child only after RESPAWN_PAUSE
            await w.submit(AppendConsent(draft(message="too soon")))
        await asyncio.sleep(1.1)
        after = await w.submit(AppendConsent(draft(message="after")))
        return lost, after, w.spawns

    lost, after, spawns = with_writer(path, body)
    assert all(isinstance(e, LedgerUnavailable) for e in lost), lost
    assert spawns == 2
    assert after.seq == 4  # the five were never committed, so the chain goes on from the three
    stored = read_ledger(path)
    assert stored.integrity == "ok" and stored.entries == 4
    assert sorted(m for m in stored.messages if m) == ["after", "ok0", "ok1", "ok2"]


def test_close_waits_for_every_answer_owed_then_the_child_exits(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    w = ProcessWriter(path)
    w.start()
    pid = w.pid
    results: list[Any] = []

    async def main() -> None:
        held = HeldWriterLock(path)
        tasks = [asyncio.ensure_future(w.submit(AppendConsent(draft(message=f"m{i}")))) for i in range(20)]
        await asyncio.sleep(0.2)
        closing = threading.Thread(target=w.close)  # as the lifespan does: from a worker thread
        closing.start()
        await asyncio.sleep(0.2)
        held.release()
        results.extend(await asyncio.gather(*tasks, return_exceptions=True))
        while closing.is_alive():
            await asyncio.sleep(0.02)
        with pytest.raises(LedgerUnavailable):
            await w.submit(AppendConsent(draft()))

    asyncio.run(main())
    assert all(isinstance(r, Receipt) for r in results) and len(results) == 20
    assert entries(path) == 20
    assert pid is not None and not Path(f"/proc/{pid}").exists()


def test_a_file_that_is_not_a_ledger_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    w = ProcessWriter(path)
    with pytest.raises(LedgerError, match="ledger.sqlite3"):
        w.start()
    assert w.spawns == 1


def test_the_child_exits_when_the_service_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys; from form_handler.ledger.sqlite.writer_process import ProcessWriter\n"
        f"w = ProcessWriter({str(tmp_path / 'ledger.sqlite3')!r}); w.start(); print(w.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    service = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert service.stdout is not None
        child = int(service.stdout.readline())
        assert Path(f"/proc/{child}").exists()
        service.kill()  # SIGKILL of the service alone, not of its group: its end of the socket closes
        service.wait(timeout=10)
        # Reaped by init once it exits, as an orphan; gone within seconds.
        wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child))
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
        if service.stdout is not None:
            service.stdout.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _writer_children(server: Server) -> list[int]:
    assert server.proc is not None
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == server.proc.pid and b"writer_process" in cmdline and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_uvicorn_keeps_every_acknowledged_submission_when_its_writer_process_is_killed(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    server = Server(tmp_path, ledger, write_manifest(tmp_path / "m.json"))
    server.start()
    try:
        asyncio.run(server.ready())

        async def run() -> Any:
            deadline = time.monotonic() + 60
            load = asyncio.ensure_future(submit_all(server.url, (f"m{i}" for i in range(1500)), clients=20,
                                                    deadline=deadline))
            await asyncio.sleep(0.5)
            children = _writer_children(server)
            assert len(children) == 1, children
            os.kill(children[0], signal.SIGKILL)
            outcome = await load
            # The service itself lived on and writes again, through a new child.
            async with httpx.AsyncClient() as client:
                await asyncio.sleep(1.1)
                after = await client.post(server.url + "/api/feedback", json=submission("after the kill"))
            return outcome, after, children[0]

        outcome, after, killed = asyncio.run(run())
        assert server.alive()
        assert after.status_code == 201, after.text
        assert len(_writer_children(server)) == 1 and _writer_children(server)[0] != killed
    finally:
        server.terminate()
    stored = read_ledger(ledger)
    lost, duplicates = losses(outcome, stored)
    assert not lost and not duplicates and stored.integrity == "ok"
    assert outcome.unexpected == []
    assert outcome.statuses[503] >= 1, outcome.statuses  # the kill was felt: what it held was not acknowledged
    assert len(outcome.acked) >= 100


class Unrebuildable(Exception):
    """Pickles, but cannot be rebuilt on the other side (its __init__ wants two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(a)


def raise_stop_iteration(txn: LedgerTxn) -> None:
    raise StopIteration("a future cannot raise this")


def raise_unrebuildable(txn: LedgerTxn) -> None:
    raise Unrebuildable("x", "y")


def test_an_answer_that_cannot_travel_fails_only_its_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.sqlite3"
    # The child must import this module to run the two failing operations.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))

    async def body(w: ProcessWriter) -> tuple[list[Any], Receipt]:
        held = HeldWriterLock(path)  # all four in one batch, one answer frame
        tasks = [asyncio.ensure_future(w.submit(op)) for op in (
            AppendConsent(draft(message="a")), raise_stop_iteration, raise_unrebuildable, AppendConsent(draft(message="b")))]
        await asyncio.sleep(0.3)
        held.release()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        return results, await w.submit(AppendConsent(draft(message="later")))

    results, later = with_writer(path, body)
    assert isinstance(results[0], Receipt) and isinstance(results[3], Receipt)
    assert isinstance(results[1], RuntimeError) and "StopIteration" in str(results[1])
    assert isinstance(results[2], LedgerError) and "could not be read" in str(results[2])
    assert later.seq == 3  # the same child, still answering
    assert entries(path) == 3


def test_close_on_the_loop_thread_does_not_block_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"

    async def main() -> tuple[float, int | None]:
        w = ProcessWriter(path)
        w.start()
        await w.submit(AppendConsent(draft()))
        pid = w.pid
        began = time.monotonic()
        w.close()  # wrong place (aclose is for the loop), but it must not hang the loop
        return time.monotonic() - began, pid

    took, pid = asyncio.run(main())
    assert took < 2
    wait_for(lambda: pid is None or not Path(f"/proc/{pid}").exists() or _zombie(pid))
    assert entries(path) == 1


def test_draining_waits_for_a_cancelled_callers_answer_without_spinning(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"

    async def body(w: ProcessWriter) -> tuple[float, bool]:
        held = HeldWriterLock(path)
        gave_up = asyncio.ensure_future(w.submit(AppendConsent(draft(message="gave up"))))
        await asyncio.sleep(0.2)
        gave_up.cancel()  # its operation is in the child, waiting for the lock
        closing = asyncio.ensure_future(w.aclose())
        cpu = time.process_time()
        await asyncio.sleep(1.0)
        spent = time.process_time() - cpu
        still_waiting = not closing.done()
        held.release()
        await asyncio.wait_for(closing, 30)
        return spent, still_waiting

    spent, still_waiting = with_writer(path, body)
    assert still_waiting  # close waited for the answer the child owed
    assert spent < 0.3, f"{spent:.2f} s of CPU while waiting one second"
    assert entries(path) == 1  # the cancelled caller's operation was committed, as with the writer thread
