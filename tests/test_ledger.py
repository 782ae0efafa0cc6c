"""The consent ledger's contract against both backends (the `ledger` fixture: a SQLite file under tmp_path, and a
database on a real PostgreSQL server), then what only the SQLite file has (`sqlite_ledger`)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import apsw
import pytest
import psycopg
from ledger_helpers import confirmed, draft, make_read_only, make_writable, sql, stored_bytes

from form_handler.consent import subscribers
from form_handler.ledger.chain import Checkpoint, canonical, entry_hash
from form_handler.ledger.sqlite.store import (
    InvalidToken, Ledger, LedgerError, LedgerUnavailable, UnknownReceipt, check_sqlite_version,
    new_receipt_secrets,
)
from form_handler.ledger import open_ledger
from form_handler.ledger.contract import LedgerStore
from form_handler.ledger.rows import EXPORT_FIELDS


@pytest.fixture
def ledger(store: LedgerStore) -> LedgerStore:
    """Each test below that takes it runs once per backend (conftest.ledger_location)."""
    return store


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "var" / "ledger.sqlite3")


def test_open_creates_folder_schema_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "ledger.sqlite3"
    with Ledger(path) as led:
        assert path.exists()
        assert led.pragmas() == {"journal_mode": "wal", "synchronous": "FULL", "busy_timeout": 10000}
        assert led.verify().ok and led.verify().count == 0


def test_append_consent_returns_receipt_chained_to_previous(ledger: LedgerStore) -> None:
    first = ledger.append_consent(draft())
    second = ledger.append_consent(draft(email=None))
    assert (first.seq, second.seq) == (1, 2)
    assert len(first.receipt_id) == 32 and first.receipt_id != second.receipt_id
    assert first.recorded_at.endswith("Z") and len(first.withdraw_token) >= 40
    row = sql(ledger, "SELECT canonical, prev_hash FROM entries WHERE seq = 2")[0]
    assert row[1] == first.entry_hash
    assert entry_hash(first.entry_hash, bytes(row[0])) == second.entry_hash


def test_receipt_ids_are_time_ordered_with_80_random_bits_and_tokens_256() -> None:
    made = [new_receipt_secrets(now=1_790_000_000.0 + i) for i in range(200)]
    ids = [receipt_id for receipt_id, _, _ in made]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids) and ids == sorted(ids)
    assert len({i[12:] for i in ids}) == 200 and ids[0][:12] == f"{1_790_000_000_000:012x}"
    assert all(len(token) == 43 and len(salt) == 16 for _, token, salt in made)
    assert len({token for _, token, _ in made}) == len({salt for _, _, salt in made}) == 200


def test_chained_entry_holds_commitment_not_personal_data(ledger: LedgerStore) -> None:
    receipt = ledger.append_consent(draft(email="ada@example.org", message="secret words"))
    data = bytes(sql(ledger, "SELECT canonical FROM entries")[0][0])
    assert b"ada@example.org" not in data and b"secret words" not in data
    assert receipt.withdraw_token.encode() not in data
    assert canonical(__import__("json").loads(data)) == data  # stored verbatim in canonical form
    assert b'"commitment":"' in data and b'"withdraw_token_sha256":"' in data


def test_database_refuses_update_delete_and_fork(ledger: LedgerStore) -> None:
    ledger.append_consent(draft())
    refused = (apsw.ConstraintError, psycopg.errors.IntegrityError)
    with pytest.raises(refused, match="append-only"):
        sql(ledger, "UPDATE entries SET page = '/x/'")
    with pytest.raises(refused, match="append-only"):
        sql(ledger, "DELETE FROM entries")
    with pytest.raises(refused, match="(?i)unique"):
        sql(ledger, "INSERT INTO entries (seq, prev_hash, hash, canonical, kind, receipt_id, recorded_at)"
                    " VALUES (2, ?, 'f', ?, 'consent', 'r', 't')", ("0" * 64, b"\x00"))
    if ledger.backend == "postgresql":
        with pytest.raises(refused, match="append-only"):
            sql(ledger, "TRUNCATE entries CASCADE")


def test_withdraw_checks_token_and_is_idempotent(ledger: LedgerStore) -> None:
    receipt = ledger.append_consent(draft(third=True))
    with pytest.raises(InvalidToken) as wrong:
        ledger.withdraw(receipt.receipt_id, "not-the-token")
    assert wrong.value.field == "withdraw_token"
    with pytest.raises(UnknownReceipt):
        ledger.withdraw("0" * 32, receipt.withdraw_token)
    first = ledger.withdraw(receipt.receipt_id, receipt.withdraw_token)
    again = ledger.withdraw(receipt.receipt_id, receipt.withdraw_token)
    assert first == again and ledger.head().count == 2
    assert ledger.status(receipt.receipt_id).withdrawn


def test_erase_removes_email_and_message_and_verify_passes(ledger: LedgerStore) -> None:
    receipt = ledger.append_consent(draft(email="ada@example.org", message="my words"))
    ledger.append_consent(draft(email="bob@example.org"))
    with ledger.transaction() as txn:
        txn.enqueue_mail(receipt.receipt_id, "confirmation", "ada@example.org", b"mail to ada", "2026-11-20T12:00:00Z")
    entry = ledger.erase(receipt.receipt_id)
    assert entry.kind == "erasure" and entry.seq == 3
    assert sql(ledger, "SELECT count(*) FROM personal WHERE receipt_id = ?", (receipt.receipt_id,)) == [(0,)]
    assert sql(ledger, "SELECT count(*) FROM outbox") == [(0,)]
    assert ledger.verify().ok and ledger.status(receipt.receipt_id).erased
    assert ledger.erase(receipt.receipt_id) == entry
    # SQLite overwrites with secure_delete and checkpoints; PostgreSQL rewrites the partition (VACUUM FULL).
    raw = stored_bytes(ledger)
    assert b"my words" not in raw and b"ada@example.org" not in raw  # overwritten, not just unlinked
    assert b"bob@example.org" in raw


def test_changing_one_byte_of_an_entry_fails_verify_at_that_entry(sqlite_ledger: Ledger) -> None:
    ledger = sqlite_ledger
    for _ in range(5):
        ledger.append_consent(draft())
    ledger.close()
    conn = sqlite3.connect(ledger.path)  # Python's own sqlite3, as an attacker would use
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET canonical = CAST(replace(CAST(canonical AS TEXT), '\"privacy\"', '\"privacz\"')"
                 " AS BLOB), policy_id = 'privacz' WHERE seq = 3")
    conn.commit()
    conn.close()
    report = Ledger(ledger.path).verify()
    assert not report.ok and report.first_bad_seq == 3
    assert report.problem == "entry #3 does not match its hash"


def test_verify_against_checkpoint_catches_truncation(ledger: LedgerStore) -> None:
    for _ in range(4):
        ledger.append_consent(draft())
    cp = ledger.head()
    assert Checkpoint.from_json(cp.to_json()) == cp
    ledger.append_consent(draft())
    assert ledger.verify(against=cp).ok
    if ledger.backend == "sqlite":
        sql(ledger, "DROP TRIGGER entries_no_delete")
        sql(ledger, "DELETE FROM entries WHERE seq >= 3")
    else:  # the owner can switch the trigger off: what a checkpoint kept elsewhere is for
        sql(ledger, "ALTER TABLE entries DISABLE TRIGGER entries_no_update")
        sql(ledger, "DELETE FROM entries WHERE seq >= 3")
    assert ledger.verify().ok  # a hash chain alone cannot see a cut tail
    report = ledger.verify(against=cp)
    assert not report.ok and report.first_bad_seq == 3


def test_read_only_file_is_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path).close()
    make_read_only(path)
    try:
        led = Ledger(path)
        with pytest.raises(LedgerUnavailable):
            led.append_consent(draft())
    finally:
        make_writable(path)
    assert led.append_consent(draft()).seq == 1


def test_old_sqlite_is_refused_with_a_clear_error() -> None:
    with pytest.raises(LedgerError, match="older than 3.51.3"):
        check_sqlite_version("3.51.2")
    check_sqlite_version("3.51.3")
    check_sqlite_version("3.54.1")


def test_stats_hide_counts_below_five(ledger: LedgerStore) -> None:
    receipts = [ledger.append_consent(draft(third=i < 6, updates=i < 2)) for i in range(7)]
    ledger.withdraw(receipts[0].receipt_id, receipts[0].withdraw_token)
    stats = ledger.stats()
    assert stats["submissions"] == 7 and stats["standing"] == 6 and stats["withdrawn"] is None
    assert stats["per_consent"] == {"contact": 6, "updates": None, "third_parties": 5}
    assert list(stats["per_day"].values()) == [6]
    assert stats["per_policy_version"] == {"privacy": {"a" * 64: 6}}


def test_stats_stop_counting_updates_after_an_unsubscribe(ledger: LedgerStore) -> None:
    receipts = [ledger.append_consent(draft(updates=True)) for _ in range(6)]
    assert ledger.stats()["per_consent"]["updates"] == 6
    with ledger.transaction() as txn:  # what the e-mail unsubscribe link records
        txn.append("withdrawal", receipts[0].receipt_id, consent_updates=False)
    stats = ledger.stats()
    assert stats["per_consent"]["updates"] == 5 and stats["standing"] == 6


def test_third_party_export_only_standing_confirmed_consents_deduped(ledger: LedgerStore) -> None:
    confirmed(ledger, draft(email="Ada@Example.org", third=True))
    confirmed(ledger, draft(email="ada@example.org", third=True))
    confirmed(ledger, draft(email="bob@example.org", third=False))
    withdrawn = confirmed(ledger, draft(email="cy@example.org", third=True))
    ledger.withdraw(withdrawn.receipt_id, withdrawn.withdraw_token)
    erased = confirmed(ledger, draft(email="di@example.org", third=True))
    ledger.erase(erased.receipt_id)
    ledger.append_consent(draft(email="eve@example.org", third=True))  # never confirmed by its owner
    assert list(ledger.export(third_party=True)) == [{"email": "ada@example.org"}]


def test_third_party_export_groups_addresses_as_the_notices_do(ledger: LedgerStore) -> None:
    # One rule (addresses.email_key): the later refusal under another spelling of the same address counts.
    confirmed(ledger, draft(email="STRASSE@example.org", third=True))
    confirmed(ledger, draft(email="straße@example.org", third=False))
    assert [p.email for p in ledger.read(lambda view: subscribers.people(view, "privacy"))] == ["straße@example.org"]
    assert list(ledger.export(third_party=True)) == []


def test_third_party_export_ignores_unconfirmed_receipts_either_way(ledger: LedgerStore) -> None:
    # A stranger's post of an address can neither put it back on the list after a withdrawal nor take it off.
    withdrawn = confirmed(ledger, draft(email="ann@example.org", third=True))
    ledger.withdraw(withdrawn.receipt_id, withdrawn.withdraw_token)
    ledger.append_consent(draft(email="ann@example.org", third=True))
    confirmed(ledger, draft(email="bob@example.org", third=True))
    ledger.append_consent(draft(email="BOB@example.org", third=False))
    assert list(ledger.export(third_party=True)) == [{"email": "bob@example.org"}]


def test_third_party_export_streams_addresses_in_order_with_the_newest_receipt_deciding(ledger: LedgerStore) -> None:
    # Receipts of several addresses interleaved, in no order: the export decides one address at a time from
    # rows ordered by address (code point order, both backends alike), newest receipt first.
    for email, third in [("zoe@example.org", True), ("Al@example.org", False), ("mia@example.org", True),
                         ("al@example.org", True), ("ZOE@example.org", False), ("zoé@example.org", True),
                         ("bo@example.org", True), ("Mia@Example.org", True)]:
        confirmed(ledger, draft(email=email, third=third))
    expected = ["al@example.org", "bo@example.org", "Mia@Example.org", "zoé@example.org"]
    assert [row["email"] for row in ledger.export(third_party=True)] == expected


def test_full_export_joins_personal_data_and_status(ledger: LedgerStore) -> None:
    receipt = ledger.append_consent(draft(email="ada@example.org", message="hi"))
    ledger.withdraw(receipt.receipt_id, receipt.withdraw_token)
    rows = list(ledger.export())
    assert [r["kind"] for r in rows] == ["consent", "withdrawal"]
    assert rows[0]["email"] == "ada@example.org" and rows[0]["message"] == "hi"
    assert rows[0]["withdrawn"] is True and "withdraw_token_sha256" not in rows[0]["details"]


def test_full_export_shows_an_email_unsubscribe_in_the_status(ledger: LedgerStore) -> None:
    receipt = ledger.append_consent(draft(updates=True))
    with ledger.transaction() as txn:
        txn.append("withdrawal", receipt.receipt_id, consent_updates=False)  # the unsubscribe link
    consent, unsubscribe = ledger.export()
    assert consent["updates_stopped"] is True and unsubscribe["updates_stopped"] is True
    assert consent["withdrawn"] is False and list(consent) == list(EXPORT_FIELDS)


def test_generic_append_for_known_receipts_only(ledger: LedgerStore) -> None:
    receipt = ledger.append_consent(draft(updates=True))
    with ledger.transaction() as txn:
        entry = txn.append("confirmation", receipt.receipt_id, policy_id="privacy")
        with pytest.raises(UnknownReceipt):
            txn.append("notice", "nope")
        with pytest.raises(ValueError):
            txn.append("consent", receipt.receipt_id)
    assert entry.seq == 2 and ledger.verify().ok


WORKER = """
import asyncio, sys, time
from pathlib import Path
from typing import Any
from form_handler.ledger.sqlite.store import ConsentDraft, Ledger
from form_handler.ledger.sqlite.writer import GroupCommitWriter
path, tag, mode, go = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
def draft(i):
    return ConsentDraft("privacy", "a" * 64, "/feedback/", f"{tag}-{i}", None, False, False, False)
while not go.exists():
    time.sleep(0.001)
if mode == "commits":  # one commit per append: the most lock hand-overs
    with Ledger(path) as led:
        for i in range(100):
            led.append_consent(draft(i))
else:  # the service's way: a group-commit writer, ten at a time
    async def main():
        w = GroupCommitWriter(path)
        w.start()
        for start in range(0, 100, 10):
            await asyncio.gather(*(w.submit(lambda t, i=i: t.append_consent(draft(i))) for i in range(start, start + 10)))
        await w.aclose()
    asyncio.run(main())
"""


def test_two_processes_appending_at_once_keep_the_chain_intact(tmp_path: Path) -> None:
    path, go = tmp_path / "ledger.sqlite3", tmp_path / "go"
    Ledger(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), tag, mode, str(go)])
             for tag, mode in (("a", "commits"), ("b", "writer"))]
    time.sleep(0.5)  # both have imported and are waiting
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with Ledger(path) as led:
        report = led.verify()
        messages = sorted(r["message"] for r in led.export())
    assert report.ok and report.count == 200
    assert messages == sorted(f"{t}-{i}" for t in "ab" for i in range(100))  # none lost, none twice
    assert len({r["receipt_id"] for r in led_export(path)}) == 200


def led_export(path: Path) -> list[dict[str, object]]:
    with Ledger(path, readonly=True) as led:
        return list(led.export())


def test_ledger_from_an_older_schema_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(LedgerError, match="move the file away"):
        Ledger(path)


def test_every_connection_reads_back_wal_full_and_busy_timeout(sqlite_ledger: Ledger) -> None:
    from form_handler.ledger.sqlite.store import read_pragmas

    ledger = sqlite_ledger
    ledger.append_consent(draft())
    with Ledger(ledger.path, readonly=True) as reader:
        exporter = reader._open_reader()  # the connection export() streams from
        try:
            for pragmas in (ledger.pragmas(), reader.pragmas(), read_pragmas(exporter)):
                assert pragmas["journal_mode"] == "wal" and pragmas["synchronous"] == "FULL"
                assert pragmas["busy_timeout"] >= 5000
        finally:
            exporter.close()


def test_page_is_erased_with_the_address_and_message_and_verify_passes(ledger: LedgerStore) -> None:
    from form_handler.ledger.export import lines

    page = "/feedback/ann-example/DE89370400440532013000/"  # a path can carry a name and an IBAN
    receipt = ledger.append_consent(draft(email="ann@example.org", message="my words", page=page))
    ledger.append_consent(draft(email="bob@example.org", page="/feedback/bob-example/"))
    data = bytes(sql(ledger, "SELECT canonical FROM entries WHERE seq = 1")[0][0])
    assert page.encode() not in data and b'"v":2' in data  # v2: the commitment covers the page instead
    assert [r["page"] for r in ledger.export()] == [page, "/feedback/bob-example/"]
    ledger.erase(receipt.receipt_id)
    rows = list(ledger.export())
    assert [r["page"] for r in rows] == [None, "/feedback/bob-example/", None] and ledger.verify().ok
    exported = "".join(lines(rows, "jsonl")) + "".join(lines(rows, "csv"))
    raw = stored_bytes(ledger)  # after erase's checkpoint (SQLite) or VACUUM FULL (PostgreSQL)
    for trace in ("ann-example", "DE89370400440532013000", "ann@example.org", "my words"):
        assert trace not in exported and trace.encode() not in raw
    assert b"bob-example" in raw and ledger.stats()["submissions"] is None


def test_a_chained_entry_may_not_carry_a_page(ledger: LedgerStore) -> None:
    receipt = ledger.append_consent(draft())
    with ledger.transaction() as txn, pytest.raises(ValueError, match="page is personal data"):
        txn.append("notice", receipt.receipt_id, policy_id="privacy", page="/feedback/someone/")


def test_self_service_reads_answer_alike_on_both_backends(ledger: LedgerStore) -> None:
    first = ledger.append_consent(draft(email="Ann@Example.org", message="one", updates=True))
    second = confirmed(ledger, draft(email="ann@example.org", message="two"))
    with ledger.transaction() as txn:
        txn.take_mail_quota("h" * 64, since="2026-11-19T00:00:00Z", at="2026-11-20T12:00:00Z", limit=3)
    entries, data, ids, oldest = ledger.read(lambda v: (
        v.receipt_entries(second.receipt_id), v.personal_data(first.receipt_id),
        v.receipts_with_address("ann@example.org"), v.oldest_quota_row("h" * 64)))
    assert [e.kind for e in entries] == ["consent", "confirmation"] and entries[0].entry_hash == second.entry_hash
    assert (data.email, data.message, data.email_key) == ("Ann@Example.org", "one", "ann@example.org")
    assert ids == [second.receipt_id, first.receipt_id] and oldest == "2026-11-20T12:00:00Z"
    assert ledger.read(lambda v: v.receipt_entries("0" * 32)) == []


def test_group_commit_undoes_only_the_failed_operation_and_the_chain_stays_whole(ledger: LedgerStore) -> None:
    import asyncio

    def append_then_fail(txn: Any) -> None:
        txn.append_consent(draft(message="rolled back"))
        raise ValueError("this operation fails after its append")

    async def batch() -> list[Any]:
        ops = [lambda t: t.append_consent(draft()), append_then_fail, lambda t: t.append_consent(draft())] * 5
        return await asyncio.gather(*(ledger.submit(op) for op in ops), return_exceptions=True)

    ledger.start()
    results = asyncio.run(batch())
    assert sum(isinstance(r, ValueError) for r in results) == 5
    report = ledger.verify()
    assert report.ok and report.count == 10 and "rolled back" not in str(list(ledger.export()))


def test_postgres_erase_waits_for_an_older_snapshot_so_no_copy_of_the_row_survives(postgres: Any) -> None:
    import threading

    url = postgres.create_database()
    led = open_ledger(url)
    try:
        gone = led.append_consent(draft(email="old-snapshot@example.org", message="seen by an old reader"))
        led.append_consent(draft(email="stays@example.org"))
        # A transaction whose snapshot predates the erasure, still open. It read only `entries`, so it holds no lock
        # on the personal data that VACUUM FULL would wait for; without erase's wait for older snapshots the rewrite
        # copies the row such a snapshot may still see (checked by hand: the address is then still in the files).
        reader = psycopg.connect(url)
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert reader.execute("SELECT count(*) FROM entries").fetchone() == (2,)
        threading.Timer(1.0, reader.close).start()
        led.erase(gone.receipt_id)
        raw = stored_bytes(led)
    finally:
        led.close()
    assert b"old-snapshot@example.org" not in raw and b"seen by an old reader" not in raw
    assert b"stays@example.org" in raw
