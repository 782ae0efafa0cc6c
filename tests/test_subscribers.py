"""Finding a person through indexes (schema 4): the same answer as reading every receipt of the policy, and
changed_since(), the cheap re-check inside the writer's transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import draft

from form_handler.consent import subscribers
from form_handler.consent.addresses import email_key
from form_handler.ledger.contract import LedgerStore
from form_handler.ledger.sqlite.store import ConsentDraft, Ledger, LedgerTxn

# Spellings of three addresses; SQLite's lower() would not make the last two one address, casefold does.
EMAILS = ("ann@example.org", "ANN@example.org", " Ann@Example.ORG ", "bob@example.org", "straße@example.org",
          "STRASSE@example.org", None)
V1, V2 = "1" * 64, "2" * 64
OP = st.tuples(st.sampled_from(("consent", "consent", "confirm", "reconsent", "withdraw", "stop", "erase", "notice")),
               st.integers(0, 40), st.sampled_from(EMAILS), st.sampled_from(("privacy", "terms")), st.booleans())


def scanned_person_of(conn: apsw.Connection, receipt_id: str) -> subscribers.Person | None:
    """person_of() as it was before the index: every person of the policy, then the one holding the receipt."""
    row = conn.execute("SELECT c.policy_id, p.email FROM entries c LEFT JOIN personal p ON p.receipt_id = c.receipt_id"
                       " WHERE c.receipt_id = ? AND c.kind = 'consent'", (receipt_id,)).fetchone()
    if row is None or not row[1]:
        return None
    for person in subscribers.people(LedgerTxn(conn), row[0]):
        if person.key == email_key(row[1]) and receipt_id in person.receipt_ids:
            return person
    return None


def apply(txn: LedgerTxn, receipts: list[str], op: tuple[Any, ...]) -> None:
    kind, which, email, policy, flag = op
    if kind == "consent":
        d = ConsentDraft(policy, V1, "/feedback/", "Hello", email, email is not None, flag, not flag)
        receipts.append(txn.append_consent(d).receipt_id)
        return
    if not receipts:
        return
    rid = receipts[which % len(receipts)]
    if kind == "confirm":
        txn.append("confirmation", rid, policy_id=policy)
    elif kind in ("reconsent", "notice"):
        txn.append(kind, rid, policy_id=policy, policy_version=V2 if flag else V1)
    elif kind == "withdraw":
        txn.append("withdrawal", rid)
    elif kind == "stop":
        txn.append("withdrawal", rid, consent_updates=False)
    else:
        txn.erase(rid)


def test_person_of_by_index_is_the_person_of_a_full_read(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        conn = led.connection

        @settings(max_examples=150, deadline=None)
        @given(st.lists(OP, max_size=60))
        def check(ops: list[tuple[Any, ...]]) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                receipts: list[str] = []
                for op in ops:
                    apply(LedgerTxn(conn), receipts, op)
                for rid in receipts:
                    assert subscribers.person_of(LedgerTxn(conn), rid) == scanned_person_of(conn, rid)
            finally:
                conn.execute("ROLLBACK")

        check()


def test_receipts_of_an_address_are_found_through_the_index(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        ids = [led.append_consent(draft(email)).receipt_id for email in ("straße@example.org", "STRASSE@example.org",
                                                                         "other@example.org")]
        conn = led.connection
        found = subscribers.receipts_of_address(LedgerTxn(conn), "privacy", email_key("Strasse@Example.org"))
        plan = [row[3] for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT p.receipt_id FROM personal p JOIN entries c ON c.receipt_id = p.receipt_id"
            " AND c.kind = 'consent' WHERE p.email_key = ? AND c.policy_id = ?", ("x", "privacy"))]
    assert found == tuple(sorted(ids[:2]))
    assert plan == ["SEARCH p USING COVERING INDEX personal_email_key (email_key=?)",
                    "SEARCH c USING INDEX entries_receipt (receipt_id=? AND kind=?)"]


@pytest.fixture
def ann(store: LedgerStore) -> tuple[LedgerStore, str]:
    led = store  # both backends
    receipt = led.append_consent(draft("ann@example.org", updates=True))
    led.append_consent(draft("bob@example.org", updates=True))
    return led, receipt.receipt_id


@pytest.mark.parametrize(("what", "changed"), [
    ("another address's entry", False), ("another policy's consent from her address", False),
    ("an entry of her receipt", True), ("a new consent from her address, spelled otherwise", True),
    ("the erasure of her receipt", True),
])
def test_changed_since_sees_only_what_touches_the_address(ann: tuple[LedgerStore, str], what: str, changed: bool) -> None:
    led, receipt_id = ann
    before = led.read(lambda conn: subscribers.seen(conn, receipt_id))
    with led.transaction() as txn:
        if what == "another address's entry":
            txn.append_consent(draft("carol@example.org"))
        elif what == "another policy's consent from her address":
            txn.append_consent(ConsentDraft("terms", V1, "/", "Hi", "ann@example.org", True, True, False))
        elif what == "an entry of her receipt":
            txn.append("confirmation", receipt_id, policy_id="privacy")
        elif what == "a new consent from her address, spelled otherwise":
            txn.append_consent(draft("Ann@Example.org"))
        else:
            txn.erase(receipt_id)
        assert subscribers.changed_since(txn, before) is changed
