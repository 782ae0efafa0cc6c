"""Double opt-in: a submission that asks for change e-mails queues a confirmation mail with it.

The consent entry and the queued mail are written in one transaction, so either both exist or
neither does, and the submission never waits on the mail server (the Mailer sends it afterwards).
The address counts for change notices only once the link in that mail was followed (a
`confirmation` entry, recorded by form_handler/mail_routes.py).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request

from . import outbox, tokens
from .keys import LinkKeys
from .ledger import ConsentDraft, LedgerTxn, Receipt
from .mail import MailError, confirmation_message
from .settings import Settings


def confirm_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url}/api/confirm?token={token}"


def consent_with_confirmation(txn: LedgerTxn, draft: ConsentDraft, *, settings: Settings, keys: LinkKeys,
                              title: str) -> Receipt:
    """Append the consent and, when updates were asked for, queue the confirmation mail (one transaction)."""
    receipt = txn.append_consent(draft)
    if draft.consent_updates and draft.email:
        token = tokens.sign(keys.signing, "confirm", receipt.receipt_id, draft.policy_id, draft.policy_version, now=time.time())
        try:
            msg = confirmation_message(settings, to=draft.email, title=title, confirm_url=confirm_url(settings, token))
        except MailError:
            # The form validated the address; one our mail code still refuses is kept without a mail
            # (the person simply never gets notices) rather than losing the submission.
            return receipt
        outbox.enqueue(txn.connection, receipt_id=receipt.receipt_id, kind="confirmation", msg=msg)
    return receipt


async def record_consent(request: Request, draft: ConsentDraft) -> Receipt:
    """The feedback route's write: consent (+ queued confirmation), then wake the background sender."""
    svc: Any = request.state.service
    try:
        policies = await svc.manifest.policies()
        title = policies[draft.policy_id].title
    except Exception:  # the title only decorates the mail; the check before this already passed
        title = draft.policy_id
    settings: Settings = svc.settings
    keys: LinkKeys = svc.keys
    receipt: Receipt = await svc.writer.submit(
        lambda txn: consent_with_confirmation(txn, draft, settings=settings, keys=keys, title=title)
    )
    mailer = getattr(request.state, "mailer", None)
    if mailer is not None and draft.consent_updates and draft.email:
        mailer.wake()
    return receipt
