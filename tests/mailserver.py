"""A real SMTP server (aiosmtpd) on a free loopback port, collecting what it receives.

Tests import it as a helper: `from mailserver import MailServer, free_port`.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def body(msg: EmailMessage, subtype: str = "plain") -> str:
    """The text of the plain (or html) part of a received message."""
    part = msg.get_body((subtype,))
    assert part is not None, f"the message has no text/{subtype} part"
    return str(part.get_content())


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class _Collector:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.hold_after: int | None = None
        self.release = threading.Event()
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=email_policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))
        # Hold the reply to this message: the sender has handed it over but not heard back,
        # which is the moment a crash leaves one message "sent but not recorded".
        if self.hold_after is not None and len(self.received) > self.hold_after:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        return "250 Message accepted"


class MailServer:
    """`with MailServer() as smtp:` runs the server; `smtp.messages` lists what arrived."""

    def __init__(self, port: int | None = None) -> None:
        self._fixed_port = port is not None
        self.port = port or free_port()
        self._collector = _Collector()
        self._controller = self._make_controller()

    def _make_controller(self) -> Controller:
        return Controller(self._collector, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=True)

    def __enter__(self) -> MailServer:
        # A free port is only free when it was asked for: a server another test started meanwhile may have
        # taken it (the suite saw "address already in use"), so a port chosen here is chosen again. A failed
        # start leaves aiosmtpd's event loop open (its _run returns before loop.close()), and the loop's
        # socketpair then surfaced as an "unclosed socket" warning in whichever test ran next: close it here.
        for attempt in range(5):
            try:
                self._controller.start()
                return self
            except OSError as e:
                failed = self._controller
                failed.stop(no_assert=True)
                failed.loop.close()
                if self._fixed_port or e.errno != errno.EADDRINUSE or attempt == 4:
                    raise
                self.port = free_port()
                self._controller = self._make_controller()
        raise AssertionError("unreachable")

    def __exit__(self, *exc: object) -> None:
        self._collector.release.set()
        self._controller.stop()

    @property
    def received(self) -> list[Received]:
        return list(self._collector.received)

    @property
    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self._collector.received]

    def recipients(self) -> list[str]:
        return [to for r in self._collector.received for to in r.rcpt_tos]

    def hold_after(self, n: int) -> None:
        """Accept n messages normally; hold the reply to every later one until `release()`."""
        self._collector.hold_after = n

    def refuse(self, address: str) -> None:
        """Answer 550 (a permanent refusal) to RCPT TO for this address."""
        self._collector.refuse.add(address)

    def release(self) -> None:
        self._collector.release.set()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self._collector.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} messages within {timeout}s, got {len(self._collector.received)}"
                )
            time.sleep(0.02)
        return self.messages
