"""Fixtures shared by the test modules (helpers to import live in service_client.py, mailserver.py, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mailserver import MailServer
from pgserver import PgServer

from form_handler.ledger import open_ledger
from form_handler.ledger.contract import LedgerStore


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    """A real SMTP server (aiosmtpd) on a free loopback port, collecting what it receives."""
    with MailServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A real PostgreSQL 15 server for the whole session (never skipped: `make test` installs it)."""
    server = PgServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a fresh, empty ledger is: a SQLite file under tmp_path, or a new database on the test server."""
    if request.param == "sqlite":
        yield str(tmp_path / "var" / "ledger.sqlite3")
        return
    server: PgServer = request.getfixturevalue("postgres")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture
def store(ledger_location: str) -> Iterator[LedgerStore]:
    """The ledger at ledger_location, opened through form_handler.ledger.open_ledger (one fixture, both backends)."""
    ledger = open_ledger(ledger_location)
    try:
        yield ledger
    finally:
        ledger.close()
