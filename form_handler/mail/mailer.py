"""The service's background mail sender: runs outbox passes while the app lives.

Started in the app's lifespan. It sends at once when woken (a submission queued a confirmation),
otherwise when the next retry falls due, and looks at the queue at least every `idle` seconds (other
workers or processes may have queued mail). Each worker of a multi-worker deployment runs one; the
outbox's leased claims keep them from sending one row twice.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from form_handler.ledger import open_ledger
from form_handler.ledger.contract import LedgerStore
from form_handler.ledger.types import LedgerError
from form_handler.mail import outbox, quota
from form_handler.settings import Settings

log = logging.getLogger("form_handler.mail.mailer")


class Mailer:
    """`start()` in the lifespan, `wake()` after queuing, `await stop()` at shutdown."""

    def __init__(self, settings: Settings, *, ledger: LedgerStore | None = None, idle: float = 60.0) -> None:
        self.settings = settings
        self.idle = idle
        self.passes = 0  # for tests: how many passes ran
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # The service's ledger when given (the caller closes it); otherwise one of its own, opened on first use.
        self._ledger: LedgerStore | None = ledger
        self._own = ledger is None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailer")

    def wake(self) -> None:
        """Send soon: called on the event loop after a message was queued and committed."""
        self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the pass under way (bounded by `timeout`), then stop. Unsent rows stay queued."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            # A pass is stuck on a slow mail server; its thread ends on its own socket timeout.
            # The ledger stays open for it; claimed rows are retried when their lease runs out.
            self._task.cancel()
            return
        if self._ledger is not None and self._own:
            self._ledger.close()

    def _pass(self) -> float:
        """One outbox pass in a worker thread; return seconds until the next one is due."""
        if self._ledger is None:
            self._ledger = open_ledger(self.settings.ledger)
        result = outbox.send_due(self._ledger, self.settings)
        quota.expire(self._ledger)  # keyed hashes of addresses, kept no longer than their day
        if result.sent or result.failed:
            log.info("mail pass: sent %d, failed %d, gave up %d", result.sent, result.failed, result.gave_up)
        due = outbox.next_due(self._ledger)
        if due is None:
            return self.idle
        return max(0.0, min(self.idle, (due - datetime.now(timezone.utc)).total_seconds()))

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                wait = await asyncio.to_thread(self._pass)
                self.passes += 1
            except (LedgerError, OSError) as e:
                log.error("mail pass failed, trying again in %.0f s: %s", self.idle, e)
                wait = self.idle
            except Exception:  # never let one bad row stop the sender for the life of the service
                log.exception("mail pass failed unexpectedly")
                wait = self.idle
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.05))
            except asyncio.TimeoutError:
                pass
