"""Fixtures shared by the test modules (helpers to import live in service_client.py, mailserver.py, ...)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mailserver import MailServer


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    """A real SMTP server (aiosmtpd) on a free loopback port, collecting what it receives."""
    with MailServer() as server:
        yield server
