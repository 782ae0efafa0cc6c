"""Mutation suite: tamper with a 1,000-entry ledger (triggers dropped) and check verify sees it.

Bit flips, deletions, swaps and duplicates are caught by the chain alone. A rewrite that
recomputes every later hash, and a cut-off tail, are caught only against an earlier checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest
from ledger_helpers import draft

from form_handler.ledger.sqlite import verify
from form_handler.ledger.chain import GENESIS, Checkpoint, canonical, entry_hash
from form_handler.ledger.sqlite.store import Ledger

COLUMNS = ("prev_hash", "hash", "kind", "receipt_id", "recorded_at", "policy_id", "policy_version", "page", "commitment",
           "consent_contact", "consent_updates", "consent_third_parties")
CONSENT_SEQ = 500


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Checkpoint]:
    path = tmp_path_factory.mktemp("mutations") / "ledger.sqlite3"
    with Ledger(path) as led, led.transaction() as txn:
        receipts = []
        while txn.connection.execute("SELECT count(*) FROM entries").fetchall()[0][0] < 1000:
            n = len(receipts)
            receipts.append(txn.append_consent(draft(email=f"p{n}@example.org", third=n % 2 == 0, updates=n % 3 == 0)))
            if n % 7 == 0:
                txn.withdraw(receipts[-1].receipt_id, receipts[-1].withdraw_token)
            if n % 11 == 0:
                txn.append("notice", receipts[-1].receipt_id, policy_id="privacy", change="2026-11-20")
            if n % 13 == 0:
                txn.erase(receipts[-1].receipt_id)
    with Ledger(path) as led:
        led.connection.execute("DELETE FROM personal WHERE rowid > 0")  # keep only chain checks in play
    conn = apsw.Connection(str(path))
    conn.execute("DROP TRIGGER entries_no_update; DROP TRIGGER entries_no_delete")
    conn.execute("DELETE FROM entries WHERE seq > 1000")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with Ledger(path, readonly=True) as led:
        assert led.verify().ok
        return path, led.head()


@pytest.fixture
def ledger(pristine: tuple[Path, Checkpoint], tmp_path: Path) -> Iterator[Ledger]:
    path = tmp_path / "ledger.sqlite3"
    shutil.copy(pristine[0], path)
    with Ledger(path) as led:
        led.connection.execute("PRAGMA synchronous=OFF")  # hundreds of tampering commits; durability moot
        yield led


def row(led: Ledger, seq: int, column: str) -> Any:
    return led.connection.execute(f"SELECT {column} FROM entries WHERE seq = ?", (seq,)).fetchall()[0][0]


@contextmanager
def tampered(led: Ledger, seq: int, column: str, value: Any) -> Iterator[None]:
    old = row(led, seq, column)
    led.connection.execute(f"UPDATE entries SET {column} = ? WHERE seq = ?", (value, seq))
    try:
        yield
    finally:
        led.connection.execute(f"UPDATE entries SET {column} = ? WHERE seq = ?", (old, seq))


def flip(value: Any) -> Any:
    if value is None:  # e.g. the page column of a v2 consent, whose page is not chained
        return "/feedback/"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value ^ 1
    if isinstance(value, bytes):
        return bytes([value[0] ^ 1]) + value[1:]
    return chr(ord(value[0]) ^ 1) + value[1:]


def assert_caught_at(led: Ledger, seq: int) -> None:
    report = led.verify()
    assert not report.ok and report.first_bad_seq == seq, report.problem
    # The same report from the range by range check over ranges of 64 entries (test_verify.py runs them in
    # several processes; a table rebuilt without its rowid seq gets the reference), and from the reference.
    conn = led._open_reader()
    try:
        conn.execute("BEGIN")
        ranged = verify.verify(conn, led.path, workers=1, range_rows=64)
        assert ranged.report == report == verify.reference(conn)
    finally:
        conn.close(True)


def test_pristine_ledger_has_1000_entries_of_every_kind(ledger: Ledger) -> None:
    kinds = dict(ledger.connection.execute("SELECT kind, count(*) FROM entries GROUP BY kind").fetchall())
    assert set(kinds) == {"consent", "withdrawal", "notice", "erasure"} and sum(kinds.values()) == 1000
    assert row(ledger, CONSENT_SEQ, "kind") == "consent" and ledger.verify().count == 1000


def test_flipped_bit_in_every_field_of_the_chained_entry_is_caught(ledger: Ledger) -> None:
    for seq in (1, CONSENT_SEQ, 1000):
        data = row(ledger, seq, "canonical")
        for key, value in json.loads(data).items():
            changed = canonical({**json.loads(data), key: flip(value)})
            with tampered(ledger, seq, "canonical", changed):
                assert_caught_at(ledger, seq)
    assert ledger.verify().ok


def test_flipped_bit_in_every_byte_of_the_stored_entry_is_caught(ledger: Ledger) -> None:
    data = row(ledger, CONSENT_SEQ, "canonical")
    for i in range(len(data)):
        changed = data[:i] + bytes([data[i] ^ (1 << (i % 8))]) + data[i + 1:]
        with tampered(ledger, CONSENT_SEQ, "canonical", changed):
            assert_caught_at(ledger, CONSENT_SEQ)


def test_flipped_bit_in_every_column_is_caught(ledger: Ledger) -> None:
    for column in COLUMNS:
        with tampered(ledger, CONSENT_SEQ, column, flip(row(ledger, CONSENT_SEQ, column))):
            assert_caught_at(ledger, CONSENT_SEQ)
    assert ledger.verify().ok
    ledger.connection.execute("UPDATE entries SET seq = ? WHERE seq = ?", (CONSENT_SEQ ^ (1 << 20), CONSENT_SEQ))
    assert_caught_at(ledger, CONSENT_SEQ)


def test_deleted_entry_is_caught(ledger: Ledger) -> None:
    ledger.connection.execute("DELETE FROM entries WHERE seq = ?", (CONSENT_SEQ,))
    assert_caught_at(ledger, CONSENT_SEQ)
    assert "missing" in (ledger.verify().problem or "")


def test_two_swapped_entries_are_caught(ledger: Ledger) -> None:
    conn = ledger.connection
    conn.execute("UPDATE entries SET seq = -1 WHERE seq = 400")
    conn.execute("UPDATE entries SET seq = 400 WHERE seq = 600")
    conn.execute("UPDATE entries SET seq = 600 WHERE seq = -1")
    assert_caught_at(ledger, 400)
    conn.execute("UPDATE entries SET seq = -1 WHERE seq = 400")
    conn.execute("UPDATE entries SET seq = 400 WHERE seq = 600")
    conn.execute("UPDATE entries SET seq = 600 WHERE seq = -1")
    unconstrain(ledger)  # now swap contents but keep each row's seq
    cols = ("canonical", *COLUMNS)
    a, b = (conn.execute(f"SELECT {', '.join(cols)} FROM entries WHERE seq = ?", (s,)).fetchall()[0] for s in (400, 600))
    sets = ", ".join(f"{c} = ?" for c in cols)
    conn.execute(f"UPDATE entries SET {sets} WHERE seq = 400", b)
    conn.execute(f"UPDATE entries SET {sets} WHERE seq = 600", a)
    assert_caught_at(ledger, 400)


def unconstrain(led: Ledger) -> None:
    """Rebuild entries without UNIQUE constraints, as an attacker would, to insert copies."""
    led.connection.execute(
        "DROP VIEW receipts; CREATE TABLE loose AS SELECT * FROM entries; DROP TABLE entries;"
        " ALTER TABLE loose RENAME TO entries"
    )
    assert led.verify().ok


def test_duplicated_entry_is_caught_in_place_and_at_the_end(ledger: Ledger) -> None:
    unconstrain(ledger)
    conn = ledger.connection
    conn.execute("INSERT INTO entries SELECT * FROM entries WHERE seq = ?", (CONSENT_SEQ,))
    assert_caught_at(ledger, CONSENT_SEQ + 1)
    conn.execute("DELETE FROM entries WHERE rowid = (SELECT max(rowid) FROM entries)")
    assert ledger.verify().ok
    conn.execute("INSERT INTO entries SELECT 1001, prev_hash, hash, canonical, kind, receipt_id, recorded_at,"
                 " policy_id, policy_version, page, commitment, consent_contact, consent_updates, consent_third_parties"
                 " FROM entries WHERE seq = ?", (CONSENT_SEQ,))
    assert_caught_at(ledger, 1001)


def rewrite_from(led: Ledger, seq: int) -> None:
    """Change entry `seq` and recompute every later hash: the chain alone stays consistent."""
    conn = led.connection
    entry = json.loads(row(led, seq, "canonical"))
    entry["consent_third_parties"] = not entry["consent_third_parties"]
    conn.execute("UPDATE entries SET canonical = ?, consent_third_parties = ? WHERE seq = ?",
                 (canonical(entry), int(entry["consent_third_parties"]), seq))
    prev = row(led, seq - 1, "hash") if seq > 1 else GENESIS
    for s, data in conn.execute("SELECT seq, canonical FROM entries WHERE seq >= ? ORDER BY seq", (seq,)).fetchall():
        digest = entry_hash(prev, data)
        conn.execute("UPDATE entries SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, "t" + digest[1:], s))
        conn.execute("UPDATE entries SET hash = ? WHERE seq = ?", (digest, s))
        prev = digest


def test_rewrite_with_recomputed_hashes_is_caught_only_against_a_checkpoint(
    ledger: Ledger, pristine: tuple[Path, Checkpoint]
) -> None:
    earlier = Checkpoint(count=700, head=row(ledger, 700, "hash"), at="2026-11-20T00:00:00Z")
    rewrite_from(ledger, CONSENT_SEQ)
    assert ledger.verify().ok  # invisible to the chain alone
    for checkpoint in (pristine[1], earlier):
        report = ledger.verify(against=checkpoint)
        assert not report.ok and report.first_bad_seq == checkpoint.count
        assert "rewritten" in (report.problem or "")


def test_truncated_tail_is_caught_only_against_a_checkpoint(ledger: Ledger, pristine: tuple[Path, Checkpoint]) -> None:
    ledger.connection.execute("DELETE FROM entries WHERE seq > 990")
    assert ledger.verify().ok and ledger.verify().count == 990
    report = ledger.verify(against=pristine[1])
    assert not report.ok and report.first_bad_seq == 991 and "removed" in (report.problem or "")
    ledger.connection.execute("CREATE TRIGGER IF NOT EXISTS noop AFTER INSERT ON entries BEGIN SELECT 1; END")
    for _ in range(20):  # cut, then grow past the checkpoint again: still caught
        ledger.append_consent(draft())
    assert ledger.verify().ok and ledger.verify().count == 1010
    report = ledger.verify(against=pristine[1])
    assert not report.ok and report.first_bad_seq == 1000


def test_changed_personal_data_is_caught_by_its_commitment(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        for i in range(3):
            led.append_consent(draft(email=f"p{i}@example.org"))
        led.connection.execute("UPDATE personal SET email = 'evil@example.org' WHERE rowid = 2")
        report = led.verify()
        assert not report.ok and report.first_bad_seq == 2 and "commitment" in (report.problem or "")


def test_changed_page_is_caught_by_its_commitment(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        for i in range(3):
            led.append_consent(draft(page=f"/feedback/{i}/"))
        led.connection.execute("UPDATE personal SET page = '/feedback/elsewhere/' WHERE rowid = 2")
        report = led.verify()
        assert not report.ok and report.first_bad_seq == 2 and "page" in (report.problem or "")
