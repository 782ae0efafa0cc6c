"""Schema migrations, against a ledger written by the code before schema 3 (tests/fixtures/ledgers/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import apsw
import pytest
from ledger_helpers import draft, make_read_only, make_writable

from form_handler.ledger.sqlite import reports

from form_handler.consent import subscribers
from form_handler.ledger.sqlite.store import Ledger, LedgerError, LedgerTxn
from form_handler.ledger.sqlite.schema import MIGRATIONS, SCHEMA_VERSION, user_version

# Made by tests/fixtures/ledgers/make_schema_2.py with the code of commit df04920: 3 consents (entry v1,
# the page chained), a confirmation, a notice, a reconsent, a withdrawal and an erasure (of ann's consent).
FIXTURE = Path(__file__).parent / "fixtures" / "ledgers" / "schema-2.sqlite3"
FIXTURE_HEAD = "273a750519332b5fd66d96cb30206e3802525a4746bbb97ea30bcdca123fc786"


@pytest.fixture
def old(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite3"
    shutil.copy(FIXTURE, path)
    return path


def columns(conn: apsw.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")]


def test_fixture_is_a_schema_2_ledger(old: Path) -> None:
    conn = apsw.Connection(str(old), flags=apsw.SQLITE_OPEN_READONLY)
    assert user_version(conn) == 2 and "page" not in columns(conn, "personal")
    conn.close()


def test_schema_2_ledger_migrates_in_place_and_still_verifies(old: Path) -> None:
    with Ledger(old) as led:
        assert user_version(led.connection) == SCHEMA_VERSION == MIGRATIONS[-1].version == 7
        assert "page" in columns(led.connection, "personal")
        report = led.verify()
        rows = list(led.export())
    assert report.ok and (report.count, report.head) == (8, FIXTURE_HEAD)  # the chain is untouched
    # v1 consents keep their chained page (erasure never could reach it); their personal data is as it was.
    assert [r["page"] for r in rows[:3]] == ["/feedback/ann-example/DE89370400440532013000/", "/feedback/", "/privacy/"]
    assert [r["email"] for r in rows[:3]] == [None, "bob@example.org", None] and rows[0]["erased"]


def test_migrated_ledger_takes_v2_consents_beside_v1_ones(old: Path) -> None:
    with Ledger(old) as led:
        receipt = led.append_consent(draft(email="dee@example.org", page="/feedback/dee-example/"))
        assert [r["page"] for r in led.export()][8] == "/feedback/dee-example/"
        led.erase(receipt.receipt_id)
        assert led.verify().ok and led.verify().count == 10
        assert [r["page"] for r in led.export()][8] is None and led.stats()["submissions"] is None
        page, = led.connection.execute("SELECT page FROM receipts WHERE seq = 1").fetchall()[0]
    assert page == "/feedback/ann-example/DE89370400440532013000/"  # the receipts view: v1 from the chain
    assert b"dee-example" not in old.read_bytes()


def test_migration_runs_once(old: Path) -> None:
    Ledger(old).close()
    with Ledger(old) as led:  # a second open finds schema 5 and applies nothing (ADD COLUMN twice would fail)
        assert user_version(led.connection) == 7 and columns(led.connection, "personal").count("page") == 1


def test_failed_migration_leaves_the_ledger_as_it_was(old: Path) -> None:
    conn = apsw.Connection(str(old))
    conn.execute("ALTER TABLE personal ADD COLUMN page TEXT")  # migration 3 will fail on its first statement
    conn.close()
    with pytest.raises(LedgerError, match="to schema 3 .* failed: duplicate column name: page; nothing was changed"):
        Ledger(old)
    conn = apsw.Connection(str(old), flags=apsw.SQLITE_OPEN_READONLY)
    views = conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'").fetchall()
    assert user_version(conn) == 2 and views == [("receipts",)]  # one transaction: nothing of it stayed
    conn.close()


def test_reader_of_a_schema_2_ledger_has_it_migrated_by_a_writer_first(old: Path) -> None:
    with Ledger(old, readonly=True) as reader:
        assert reader.verify().ok and user_version(reader.connection) == SCHEMA_VERSION


def test_reader_of_a_schema_2_ledger_it_cannot_write_says_what_to_do(old: Path) -> None:
    make_read_only(old)
    try:
        with pytest.raises(LedgerError, match=f"must be migrated to schema {SCHEMA_VERSION}"):
            Ledger(old, readonly=True)
    finally:
        make_writable(old)


def test_new_ledger_gets_every_migration(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        assert user_version(led.connection) == SCHEMA_VERSION and "page" in columns(led.connection, "personal")


def test_migration_fills_email_key_as_addresses_are_compared(old: Path) -> None:
    conn = apsw.Connection(str(old))  # bob, spelled so that SQLite's lower() (ASCII only) would not fold it
    conn.execute("UPDATE personal SET email = ' BOB.STRAẞE@Example.ORG' WHERE email = 'bob@example.org'")
    conn.close()
    with Ledger(old) as led:
        rows = led.connection.execute("SELECT email_key FROM personal WHERE email IS NOT NULL").fetchall()
        (bob,) = subscribers.receipts_of_address(LedgerTxn(led.connection), "privacy", "bob.strasse@example.org")
        person = subscribers.person_of(LedgerTxn(led.connection), bob)
    assert rows == [("bob.strasse@example.org",)]
    assert person is not None and person.latest_version == "2" * 64  # his reconsent, found by the index


def test_migration_counts_the_statistics_of_the_ledger_as_it_is(old: Path) -> None:
    # ann erased, bob standing with updates (reconsented to version 2), cy (no address, third parties) withdrawn.
    with Ledger(old) as led:
        conn = led.connection
        totals = conn.execute("SELECT submissions, withdrawn, erased, standing, contact, updates, third_parties"
                              " FROM stats_totals").fetchall()
        versions = conn.execute("SELECT policy_id, policy_version, n FROM stats_versions").fetchall()
        days = conn.execute("SELECT sum(n) FROM stats_days").fetchall()
        for i in range(5):
            led.append_consent(draft(email=f"p{i}@example.org"))
        stats, recount = led.stats(), led.read(lambda view: reports.recount_stats(view.connection))
    assert totals == [(3, 1, 1, 1, 1, 1, 0)] and versions == [("privacy", "2" * 64, 1)] and days == [(1,)]
    assert stats == recount and stats["standing"] == 6
