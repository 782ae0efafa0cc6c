"""`policy-site ledger copy` between backends and `ledger backup` of a live SQLite ledger, through the real CLI."""

from __future__ import annotations

import threading
from pathlib import Path

from click.testing import CliRunner
from ledger_helpers import confirmed, draft, sql
from pgserver import PgServer

from form_handler.cli import cli
from form_handler.ledger import open_ledger
from form_handler.ledger.sqlite.store import Ledger


def fill(location: str) -> tuple[int, str]:
    led = open_ledger(location)
    try:
        kept = confirmed(led, draft(email="ann@example.org", updates=True, third=True))
        gone = led.append_consent(draft(email="bob@example.org", message="bye"))
        led.append_consent(draft(email=None, message="anonymous"))
        led.withdraw(kept.receipt_id, kept.withdraw_token)
        led.erase(gone.receipt_id)
        head = led.head()
    finally:
        led.close()
    return head.count, head.head


def test_copy_sqlite_to_postgres_to_sqlite_keeps_every_byte_and_hash(tmp_path: Path, postgres: PgServer) -> None:
    source, back = str(tmp_path / "a.sqlite3"), str(tmp_path / "b.sqlite3")
    count, head = fill(source)
    url = postgres.create_database()
    there = CliRunner().invoke(cli, ["ledger", "copy", source, url])
    again = CliRunner().invoke(cli, ["ledger", "copy", url, back])
    assert there.exit_code == 0 and again.exit_code == 0, there.output + again.output
    assert there.output.count(f"{count} entries, head {head}, chain ok") == 2
    assert f"target: {count} entries, head {head}, chain ok" in again.output
    with Ledger(source) as a, Ledger(back) as b:
        assert list(a.raw_entries()) == list(b.raw_entries()) and list(a.raw_personal()) == list(b.raw_personal())
        assert list(a.export()) == list(b.export()) and a.stats() == b.stats()
    pg = open_ledger(url)
    try:
        assert [r[3] for r in pg.raw_entries()] == [r[3] for r in Ledger(source).raw_entries()]
        assert pg.stats() == Ledger(source).stats()
    finally:
        pg.close()


def test_copy_refuses_a_target_that_holds_entries(tmp_path: Path, postgres: PgServer) -> None:
    source, url = str(tmp_path / "a.sqlite3"), postgres.create_database()
    fill(source)
    fill(url)
    result = CliRunner().invoke(cli, ["ledger", "copy", source, url])
    assert result.exit_code == 1 and "already holds 6 entries" in result.output
    assert sql(open_ledger(url), "SELECT count(*) FROM entries") == [(6,)]


def test_backup_during_writes_verifies_and_holds_every_acknowledged_entry(tmp_path: Path) -> None:
    path, dest = tmp_path / "ledger.sqlite3", tmp_path / "backup.sqlite3"
    acknowledged: dict[int, str] = {}
    stop = threading.Event()

    def write() -> None:
        with Ledger(path) as led:
            while not stop.is_set():
                receipt = led.append_consent(draft(message=f"m{len(acknowledged)}"))
                acknowledged[receipt.seq] = receipt.entry_hash  # committed: acknowledged

    Ledger(path).close()
    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(acknowledged) < 200:
            threading.Event().wait(0.01)
        result = CliRunner().invoke(cli, ["ledger", "backup", "--ledger", str(path), str(dest)])
        at_backup = len(acknowledged)
    finally:
        stop.set()
        writer.join()
    assert result.exit_code == 0 and "chain: ok" in result.output, result.output
    with Ledger(dest, readonly=True) as copy:
        head = copy.head()
        stored = {seq: digest for seq, _, digest, _ in copy.raw_entries()}
    assert 200 <= head.count and head.count <= len(acknowledged) and at_backup <= len(acknowledged)
    assert stored == {seq: acknowledged[seq] for seq in range(1, head.count + 1)}
    assert f'"head": "{head.head}"' in result.output
    assert oct(dest.stat().st_mode & 0o777) == "0o600"


def test_backup_refuses_a_postgresql_ledger_and_names_its_tools(postgres: PgServer, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["ledger", "backup", "--ledger", postgres.create_database(), str(tmp_path / "x")])
    assert result.exit_code == 1 and "pg_dump" in result.output
