"""The parallel verify (form_handler/verify.py, verify_range.py) against the one-process reference, on real SQLite files.

Every corruption is made on a copy of one ledger of 1,500 entries of every shape the code writes, with the
triggers dropped as an attacker would; each test checks it in three processes over ranges of 64 entries (so a
problem lands in a later range, and two problems in ranges other processes check) and compares the report with
one process's and with `verify.reference`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from ledger_helpers import draft

from form_handler.ledger.sqlite import verify
from form_handler.ledger.chain import Checkpoint, VerifyReport, entry_hash
from form_handler.ledger.sqlite.store import Ledger

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "ledgers" / "schema-2.sqlite3"
ENTRIES = 1500
RANGE = 64


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verify") / "ledger.sqlite3"
    with Ledger(path) as led, led.transaction() as txn:
        n = 0
        while txn.connection.execute("SELECT count(*) FROM entries").fetchall()[0][0] < ENTRIES:
            email = f"p{n}@example.org" if n % 5 else None
            receipt = txn.append_consent(draft(email=email, updates=n % 2 == 0, third=n % 3 == 0, page=f"/f/{n}/"))
            rid = receipt.receipt_id
            if email and n % 4:
                txn.append("confirmation", rid, policy_id="privacy")
            if n % 6 == 1:  # as notify records a notice
                txn.append("notice", rid, policy_id="privacy", policy_version="b" * 64, change_date="2026-11-20",
                           effective="2026-12-20")
            if n % 9 == 2:
                txn.append("reconsent", rid, policy_id="privacy", policy_version="b" * 64)
            if n % 11 == 3:
                txn.append("withdrawal", rid, consent_updates=False)  # the e-mail unsubscribe
            if n % 13 == 4:
                txn.withdraw(rid, receipt.withdraw_token)
            if n % 17 == 5:
                txn.erase(rid)
            n += 1
    conn = apsw.Connection(str(path))
    conn.execute("DROP TRIGGER entries_no_update; DROP TRIGGER entries_no_delete")
    conn.execute("DELETE FROM entries WHERE seq > ?", (ENTRIES,))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.fixture
def ledger(pristine: Path, tmp_path: Path) -> Iterator[Ledger]:
    path = tmp_path / "ledger.sqlite3"
    shutil.copy(pristine, path)
    with Ledger(path) as led:
        yield led


def run(led: Ledger, against: Checkpoint | None = None, workers: int = 3) -> verify.Outcome:
    conn = led._open_reader()
    try:
        conn.execute("BEGIN")
        return verify.verify(conn, led.path, against, workers=workers, range_rows=RANGE)
    finally:
        conn.close(True)


def reference(led: Ledger, against: Checkpoint | None = None) -> VerifyReport:
    conn = led._open_reader()
    try:
        conn.execute("BEGIN")
        return verify.reference(conn, against)
    finally:
        conn.close(True)


def agreed(led: Ledger, against: Checkpoint | None = None) -> VerifyReport:
    """The report of several processes, which one process and the reference must give too."""
    parallel, single = run(led, against), run(led, against, workers=1)
    assert parallel.processes == 3 and single.processes == 1
    assert parallel.report == single.report == reference(led, against)
    return parallel.report


def sql(led: Ledger, statement: str, *params: Any) -> Any:
    return led.connection.execute(statement, params).fetchall()


def flip_byte(led: Ledger, seq: int) -> None:
    data = sql(led, "SELECT canonical FROM entries WHERE seq = ?", seq)[0][0]
    sql(led, "UPDATE entries SET canonical = ? WHERE seq = ?", bytes([data[0] ^ 1]) + data[1:], seq)


def seq_of(led: Ledger, kind: str, after: int) -> int:
    return int(sql(led, "SELECT min(seq) FROM entries WHERE kind = ? AND seq > ?", kind, after)[0][0])


def test_verify_pristine_ledger_of_every_shape_without_the_row_by_row_pass(ledger: Ledger) -> None:
    kinds = {k for (k,) in sql(ledger, "SELECT DISTINCT kind FROM entries")}
    assert kinds == {"consent", "confirmation", "notice", "reconsent", "withdrawal", "erasure"}
    outcome = run(ledger)
    assert outcome.report.ok and outcome.report.count == ENTRIES and outcome.exact_rows == 0
    assert outcome.report == reference(ledger)


def test_verify_v1_entries_without_the_row_by_row_pass(tmp_path: Path) -> None:
    shutil.copy(FIXTURE_V1, tmp_path / "ledger.sqlite3")
    with Ledger(tmp_path / "ledger.sqlite3") as led:  # schema 2: v1 consents that chain their page
        led.append_consent(draft(email="dee@example.org"))  # and a v2 one after them
        outcome = run(led)
        assert outcome.report.ok and outcome.report.count == 9 and outcome.exact_rows == 0
        sql(led, "UPDATE personal SET page = '/f/' WHERE rowid = (SELECT min(rowid) FROM personal)")  # bob, v1
        assert run(led).report == reference(led) and run(led).report.first_bad_seq == 2


def test_verify_bad_entry_in_a_later_range_is_reported_as_the_reference_does(ledger: Ledger) -> None:
    flip_byte(ledger, 1300)
    report = agreed(ledger)
    assert (report.first_bad_seq, report.problem, report.count) == (1300, "entry #1300 does not match its hash", 1299)


def test_verify_two_bad_entries_in_different_ranges_report_the_smaller_seq(ledger: Ledger) -> None:
    flip_byte(ledger, 1400)
    consent = seq_of(ledger, "consent", 700)
    sql(ledger, "UPDATE entries SET consent_third_parties = 1 - consent_third_parties WHERE seq = ?", consent)
    report = agreed(ledger)
    assert report.first_bad_seq == consent and report.count == 1399  # the walk still stops at #1400
    assert report.problem == f"entry #{consent}: column consent_third_parties does not match the chained entry"


def test_verify_column_problems_in_two_ranges_report_the_smaller_seq(ledger: Ledger) -> None:
    later, earlier = seq_of(ledger, "consent", 1200), seq_of(ledger, "consent", 400)
    for seq in (later, earlier):
        sql(ledger, "UPDATE entries SET consent_updates = 1 - consent_updates WHERE seq = ?", seq)
    report = agreed(ledger)
    assert report.first_bad_seq == earlier and report.count == ENTRIES


def test_verify_one_entry_rehashed_from_a_changed_prev_hash_breaks_the_next_link(ledger: Ledger) -> None:
    # Its own hash holds over its (changed) prev_hash column, so only the walk and the next link can see it.
    data = sql(ledger, "SELECT canonical FROM entries WHERE seq = 900")[0][0]
    forged = "f" * 64
    sql(ledger, "UPDATE entries SET prev_hash = ?, hash = ? WHERE seq = 900", forged, entry_hash(forged, data))
    assert agreed(ledger).problem == "entry #900 does not match its hash"


def test_verify_changed_personal_data_in_a_later_range_is_found(ledger: Ledger) -> None:
    receipt, seq = sql(ledger, "SELECT receipt_id, seq FROM entries e WHERE kind = 'consent' AND seq > 900"
                       " AND EXISTS (SELECT 1 FROM personal p WHERE p.receipt_id = e.receipt_id) LIMIT 1")[0]
    sql(ledger, "UPDATE personal SET message = 'changed' WHERE receipt_id = ?", receipt)
    assert agreed(ledger).problem == f"entry #{seq}: email, message or page do not match the entry's commitment"


def test_verify_missing_entries_at_range_boundaries_name_the_next_one(ledger: Ledger) -> None:
    sql(ledger, "DELETE FROM entries WHERE seq IN (?, ?)", 2 * RANGE, 2 * RANGE + 1)  # end of one range, start of next
    assert agreed(ledger).problem == f"entry #{2 * RANGE} is missing (found #{2 * RANGE + 2} next)"


def test_verify_missing_tail_of_a_range_names_the_entry_after_the_range(ledger: Ledger) -> None:
    sql(ledger, "DELETE FROM entries WHERE seq BETWEEN ? AND ?", 3 * RANGE - 5, 3 * RANGE + 2)
    assert agreed(ledger).problem == f"entry #{3 * RANGE - 5} is missing (found #{3 * RANGE + 3} next)"


def test_verify_a_tie_at_one_seq_goes_to_the_chain_then_the_link_then_the_columns(ledger: Ledger) -> None:
    seq = seq_of(ledger, "consent", 1000)
    sql(ledger, "UPDATE personal SET message = 'x' WHERE receipt_id = (SELECT receipt_id FROM entries WHERE seq = ?)",
        seq)
    assert agreed(ledger).problem == f"entry #{seq}: email, message or page do not match the entry's commitment"
    sql(ledger, "UPDATE entries SET consent_contact = 1 - consent_contact WHERE seq = ?", seq)
    assert agreed(ledger).problem == f"entry #{seq}: column consent_contact does not match the chained entry"
    sql(ledger, "UPDATE entries SET prev_hash = 'x' || prev_hash WHERE seq = ?", seq)
    assert agreed(ledger).problem == f"entry #{seq} does not link to the hash of entry #{seq - 1}"
    flip_byte(ledger, seq)
    assert agreed(ledger).problem == f"entry #{seq} does not match its hash"


@pytest.mark.parametrize("change", [
    "UPDATE entries SET page = '/x/' WHERE seq = ?",  # a key the chained entry does not have
    "UPDATE entries SET kind = 'withdrawal' WHERE seq = ?",
    "UPDATE entries SET consent_contact = 2 WHERE seq = ?",
    "UPDATE entries SET commitment = NULL WHERE seq = ?",
    "UPDATE entries SET seq = seq WHERE seq = ?",  # no change: still ok
])
def test_verify_column_changes_agree_with_the_reference(ledger: Ledger, change: str) -> None:
    seq = seq_of(ledger, "consent", 1100)
    sql(ledger, change, seq)
    assert agreed(ledger).first_bad_seq == (None if "seq = seq" in change else seq)


@pytest.mark.parametrize("blob", ["CAST(policy_id AS BLOB)", "jsonb(json_quote(policy_id))"])
def test_verify_a_blob_in_a_text_column_is_a_changed_column(ledger: Ledger, blob: str) -> None:
    # Type matters to every query (policy_id = 'privacy' no longer matches one), even for a BLOB that JSON
    # functions would read as JSONB text equal to the chained value.
    seq = seq_of(ledger, "consent", 1100)
    sql(ledger, f"UPDATE entries SET policy_id = {blob} WHERE seq = ?", seq)
    assert agreed(ledger).problem == f"entry #{seq}: column policy_id does not match the chained entry"


@pytest.mark.parametrize("seq", [70, 2 * RANGE])  # inside a range; the last entry of one, which the next starts from
def test_verify_a_blob_in_the_hash_column_does_not_match_its_hash(ledger: Ledger, seq: int) -> None:
    # Its bytes are the right hex digits, but the reference compares a str with what SQLite hands back.
    sql(ledger, "UPDATE entries SET hash = CAST(hash AS BLOB) WHERE seq = ?", seq)
    report = agreed(ledger)
    assert (report.first_bad_seq, report.problem) == (seq, f"entry #{seq} does not match its hash")


def test_verify_a_blob_in_the_prev_hash_column_breaks_the_link(ledger: Ledger) -> None:
    sql(ledger, "UPDATE entries SET prev_hash = CAST(prev_hash AS BLOB) WHERE seq = 70")
    assert agreed(ledger).problem == "entry #70 does not link to the hash of entry #69"


NOT_UTF8 = "CAST(x'ff' || CAST({0} AS BLOB) AS TEXT)"  # TEXT SQLite stores as it is, which apsw cannot read as str


@pytest.mark.parametrize("seq", [70, 2 * RANGE])  # inside a range; the last entry of one, which the next starts from
@pytest.mark.parametrize(("column", "problem"), [
    ("hash", "entry #{seq} does not match its hash"),
    ("prev_hash", "entry #{seq} does not link to the hash of entry #{before}"),
    ("policy_id", "entry #{seq}: policy_id holds text that is not valid UTF-8 (the file was edited or damaged)"),
])
def test_verify_names_an_entry_whose_text_is_not_utf8(ledger: Ledger, seq: int, column: str, problem: str) -> None:
    # The reference walk cannot read such a row at all (UnicodeDecodeError), so the fast path is checked alone,
    # in parallel and in one process: it names the entry instead of failing with a traceback.
    sql(ledger, f"UPDATE entries SET {column} = {NOT_UTF8.format(column)} WHERE seq = ?", seq)
    for workers in (3, 1):
        report = run(ledger, workers=workers).report
        assert not report.ok
        assert (report.first_bad_seq, report.problem) == (seq, problem.format(seq=seq, before=seq - 1))


def test_verify_names_personal_text_that_is_not_utf8(ledger: Ledger) -> None:
    seq = seq_of(ledger, "consent", 1000)
    sql(ledger, f"UPDATE personal SET message = {NOT_UTF8.format('message')} "
                "WHERE receipt_id = (SELECT receipt_id FROM entries WHERE seq = ?)", seq)
    report = run(ledger).report
    assert (report.first_bad_seq, report.problem) == (
        seq, f"entry #{seq}: personal.message holds text that is not valid UTF-8 (the file was edited or damaged)")


def test_verify_a_rewritten_tail_cannot_hide_a_key_in_the_withdraw_token(ledger: Ledger) -> None:
    # With every later hash recomputed the chain holds (only a checkpoint shows the rewrite), but the entry's
    # bytes now carry a page its column does not: still a column mismatch.
    seq = seq_of(ledger, "consent", 1000)
    data = sql(ledger, "SELECT canonical FROM entries WHERE seq = ?", seq)[0][0]
    smuggled = b'x","page":"/hidden/'
    data = data[:-66] + smuggled + b"0" * (64 - len(smuggled)) + data[-2:]
    sql(ledger, "UPDATE entries SET canonical = ? WHERE seq = ?", data, seq)
    _rehash_from(ledger, seq)
    assert agreed(ledger).problem == f"entry #{seq}: column page does not match the chained entry"


def _rehash_from(led: Ledger, seq: int) -> None:
    prev = sql(led, "SELECT hash FROM entries WHERE seq = ?", seq - 1)[0][0]
    for s, canonical in sql(led, "SELECT seq, canonical FROM entries WHERE seq >= ? ORDER BY seq", seq):
        digest = entry_hash(prev, canonical)
        sql(led, "UPDATE entries SET prev_hash = ?, hash = ? WHERE seq = ?", prev, digest, s)
        prev = digest


def test_verify_against_a_checkpoint_agrees_with_the_reference(ledger: Ledger) -> None:
    head = ledger.head()
    earlier = Checkpoint(700, sql(ledger, "SELECT hash FROM entries WHERE seq = 700")[0][0], "")
    for checkpoint in (head, earlier, Checkpoint(0, "0" * 64, ""), Checkpoint(0, "f" * 64, "")):
        assert agreed(ledger, checkpoint).ok
    assert agreed(ledger, Checkpoint(700, "f" * 64, "")).problem == (
        "entry #700 differs from the checkpoint's head (rewritten history)")
    sql(ledger, "DELETE FROM entries WHERE seq > 1450")
    assert agreed(ledger, head).problem == "the ledger has 1450 entries but the checkpoint has 1500: entries were removed"
    flip_byte(ledger, 300)  # before the checkpoint's entry: the chain's own problem comes first
    assert agreed(ledger, earlier).first_bad_seq == 300


def test_verify_a_rewritten_checkpoint_entry_outranks_a_column_problem_there(ledger: Ledger) -> None:
    sql(ledger, "UPDATE entries SET kind = 'consenT' WHERE seq = 700")
    report = agreed(ledger, Checkpoint(700, "f" * 64, ""))
    assert report.problem == "entry #700 differs from the checkpoint's head (rewritten history)"


def test_verify_the_ranges_of_a_worker_that_dies_are_checked_by_the_caller(ledger: Ledger,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    flip_byte(ledger, 1000)

    def start_one_that_dies(path: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.buffer.read(1)"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    monkeypatch.setattr(verify, "_start", start_one_that_dies)
    outcome = run(ledger)
    assert outcome.processes == 3 and outcome.report == reference(ledger) and outcome.report.first_bad_seq == 1000


def test_verify_a_table_rebuilt_without_its_rowid_seq_uses_the_reference(ledger: Ledger) -> None:
    sql(ledger, "DROP VIEW receipts; CREATE TABLE loose AS SELECT * FROM entries; DROP TABLE entries;"
                " ALTER TABLE loose RENAME TO entries")
    sql(ledger, "INSERT INTO entries SELECT * FROM entries WHERE seq = 600")
    outcome = run(ledger)
    assert outcome.report == reference(ledger) and outcome.report.problem == "entry #601 is missing (found #600 next)"


def test_ledger_verify_checks_a_ledger_of_several_ranges_in_processes(ledger: Ledger,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "RANGE_ROWS", RANGE)
    monkeypatch.setattr(verify, "PARALLEL_MIN_ENTRIES", 1000)
    flip_byte(ledger, 1234)
    for workers in (None, 1, 4):
        assert ledger.verify(workers=workers) == reference(ledger)


def test_verify_withdrawals_of_one_consent_without_the_row_by_row_pass(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        receipt = led.append_consent(draft(email="ann@example.org", third=True, updates=True))
        with led.transaction() as txn:
            for name in ("consent_contact", "consent_updates", "consent_third_parties"):
                txn.append("withdrawal", receipt.receipt_id, **{name: False})
        outcome = run(led)
        assert outcome.report.ok and outcome.report.count == 4 and outcome.exact_rows == 0


def test_verify_a_flag_of_2_beside_a_chained_null_is_a_changed_column(ledger: Ledger) -> None:
    # With the tail rehashed the chain holds; json_object renders the 2 as 2, never as the chained null.
    seq = seq_of(ledger, "consent", 1000)
    data = sql(ledger, "SELECT canonical FROM entries WHERE seq = ?", seq)[0][0]
    data = data.replace(b'"consent_contact":true', b'"consent_contact":null').replace(
        b'"consent_contact":false', b'"consent_contact":null')
    sql(ledger, "UPDATE entries SET canonical = ?, consent_contact = 2 WHERE seq = ?", data, seq)
    _rehash_from(ledger, seq)
    assert agreed(ledger).problem == f"entry #{seq}: column consent_contact does not match the chained entry"


def _consent_with_personal_data(led: Ledger, after: int) -> tuple[str, int]:
    receipt, seq = sql(led, "SELECT receipt_id, seq FROM entries e WHERE kind = 'consent' AND seq > ? AND EXISTS"
                       " (SELECT 1 FROM personal p WHERE p.receipt_id = e.receipt_id) ORDER BY seq LIMIT 1", after)[0]
    return receipt, seq


def _move_to_the_end(led: Ledger, receipt: str, message: str | None = None) -> None:
    # Its personal data deleted and added again: a new rowid, after every other row (out of insertion order).
    sql(led, "CREATE TEMP TABLE moved AS SELECT * FROM personal WHERE receipt_id = ?", receipt)
    sql(led, "DELETE FROM personal WHERE receipt_id = ?", receipt)
    if message is not None:
        sql(led, "UPDATE moved SET message = ?", message)
    sql(led, "INSERT INTO personal SELECT * FROM moved")
    sql(led, "DROP TABLE moved")


def test_verify_personal_data_out_of_insertion_order_is_still_checked(ledger: Ledger) -> None:
    receipt, seq = _consent_with_personal_data(ledger, 500)
    _move_to_the_end(ledger, receipt)
    outcome = run(ledger)
    assert outcome.report.ok and outcome.exact_rows == 0 and outcome.report == reference(ledger)
    later_receipt, later = _consent_with_personal_data(ledger, 1200)
    _move_to_the_end(ledger, receipt, "changed")
    _move_to_the_end(ledger, later_receipt, "changed too")
    assert agreed(ledger).problem == f"entry #{seq}: email, message or page do not match the entry's commitment"


def test_verify_a_blob_receipt_id_in_personal_does_not_stand_in_for_the_text_one(ledger: Ledger) -> None:
    # The copy with a BLOB receipt id takes the original's place among the rows read in insertion order; the
    # reference's join never matches it, and finds the changed row (now the last one) for the consent.
    receipt, seq = _consent_with_personal_data(ledger, 700)
    rowid = sql(ledger, "SELECT rowid FROM personal WHERE receipt_id = ?", receipt)[0][0]
    _move_to_the_end(ledger, receipt, "changed")
    sql(ledger, "INSERT INTO personal (rowid, receipt_id, salt, email, message, page, email_key) SELECT ?,"
                " CAST(receipt_id AS BLOB), salt, email, 'placeholder', page, email_key FROM personal WHERE receipt_id = ?",
        rowid, receipt)
    assert agreed(ledger).problem == f"entry #{seq}: email, message or page do not match the entry's commitment"


def test_verify_personal_data_without_its_primary_key_is_joined(ledger: Ledger) -> None:
    # A second row for one receipt, far from the first: only a lookup per consent finds it.
    receipt, seq = _consent_with_personal_data(ledger, 300)
    sql(ledger, "DROP VIEW receipts; CREATE TABLE loose AS SELECT * FROM personal; DROP TABLE personal;"
                " ALTER TABLE loose RENAME TO personal")
    assert agreed(ledger).ok
    sql(ledger, "INSERT INTO personal SELECT receipt_id, salt, email, 'changed', page, email_key FROM personal"
                " WHERE receipt_id = ?", receipt)
    assert agreed(ledger).problem == f"entry #{seq}: email, message or page do not match the entry's commitment"
