"""Double opt-in: a submission that asks for change e-mails or third-party sharing queues a confirmation mail.

The consent entry and the queued mail are written in one transaction, so either both exist or
neither does, and the submission never waits on the mail server (the Mailer sends it afterwards).
What such a consent allows counts only once the link in that mail was followed (a `confirmation`
entry, recorded by form_handler/mail_routes.py): change notices (subscribers.py) and the third-party
export (reports.py) read only confirmed receipts, because anyone can type someone else's address.

One address gets at most `settings.mail_per_recipient` confirmation mails a day (form_handler/quota.py).
Over that, the consent is still recorded, without a mail, and the submitter is told nothing different:
a different answer would tell anyone whether an address was already named today.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from form_handler.consent import links, tokens
from form_handler.consent.keys import LinkKeys
from form_handler.ledger.contract import AppendConsent, LedgerTxn
from form_handler.ledger.types import ConsentDraft, Receipt
from form_handler.mail import outbox, quota
from form_handler.mail.message import MailError, confirmation_message
from form_handler.settings import Settings

log = logging.getLogger("form_handler.mail.optin")


def confirm_url(settings: Settings, token: str) -> str:
    return links.url(settings.base_url, "confirm", token)


def needs_confirmation(draft: ConsentDraft) -> bool:
    """Whether the submission asks for something that only the address's owner may confirm."""
    return bool(draft.email) and (draft.consent_updates or draft.consent_third_parties)


def consent_with_confirmation(txn: LedgerTxn, draft: ConsentDraft, *, settings: Settings, keys: LinkKeys,
                              title: str) -> Receipt:
    """Append the consent and, when it needs confirming, queue the confirmation mail (one transaction)."""
    receipt = txn.append_consent(draft)
    if draft.email is None or not needs_confirmation(draft):
        return receipt
    token = tokens.sign(keys.signing, "confirm", receipt.receipt_id, draft.policy_id, draft.policy_version, now=time.time())
    try:
        msg = confirmation_message(settings, to=draft.email, title=title, confirm_url=confirm_url(settings, token),
                                   updates=draft.consent_updates, third_parties=draft.consent_third_parties)
    except MailError:
        # The form validated the address; one our mail code still refuses is kept without a mail
        # (the consent then stays unconfirmed) rather than losing the submission.
        return receipt
    if not quota.take(txn, keys.derive(quota.KEY_LABEL), draft.email, limit=settings.mail_per_recipient):
        # Silent toward the submitter (same receipt, same status); the log names no address.
        log.info("confirmation mail not queued: that address had %d today", settings.mail_per_recipient)
        return receipt
    outbox.enqueue(txn, receipt_id=receipt.receipt_id, kind="confirmation", msg=msg)
    return receipt


async def record_consent(request: Request, draft: ConsentDraft) -> Receipt:
    """The feedback route's write: consent (+ queued confirmation), then wake the background sender."""
    svc: Any = request.state.service
    # Operations as data (picklable), so they can reach a writer process. Without a confirmation to queue,
    # consent_with_confirmation is append_consent alone: AppendConsent says so, pickles small and lets the
    # writer record a run of such submissions together.
    op: Callable[[LedgerTxn], Receipt] = AppendConsent(draft)
    if needs_confirmation(draft):
        try:
            policies = await svc.manifest.policies()
            title = policies[draft.policy_id].title
        except Exception:  # the title only decorates the mail; the check before this already passed
            title = draft.policy_id
        settings: Settings = svc.settings
        keys: LinkKeys = svc.keys
        op = functools.partial(consent_with_confirmation, draft=draft, settings=settings, keys=keys, title=title)
    receipt: Receipt = await svc.ledger.submit(op)
    mailer = getattr(request.state, "mailer", None)
    if mailer is not None and needs_confirmation(draft):
        mailer.wake()  # also when the quota held the mail back: the answer must not depend on it
    return receipt
