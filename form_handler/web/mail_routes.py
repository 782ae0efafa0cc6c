"""The pages behind the links in our e-mails: confirm an address, agree to a new version, withdraw, unsubscribe.

GET only shows a page with a button: mail scanners fetch links to check them, and that must not
confirm, agree or withdraw anything. The button POSTs to the same URL, and that POST records the
entry through the group-commit writer. Mail clients' one-click unsubscribe (RFC 8058) POSTs to the
List-Unsubscribe URL directly; the token is in the URL, so no body needs to be read.

A forged or damaged link gets 400, an expired or already used one 410, each with a page saying so,
and nothing is recorded. What a POST writes is decided before the write transaction, on a read
snapshot, through indexes (the address's receipts and their entries); inside the writer's transaction
only the entries appended since that snapshot are looked at, and if one of them touches this address
the decision is made again there. So a link costs the same at any size of ledger, holds the write lock
for no longer than its appends, and two clicks at once still record once.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from form_handler.consent import links, subscribers, tokens
from form_handler.consent.keys import LinkKeys
from form_handler.consent.manifest import ManifestUnavailable
from form_handler.consent.tokens import LinkClaim, TokenRefused
from form_handler.ledger.contract import LedgerStore, LedgerTxn, LedgerView
from form_handler.ledger.types import LedgerRefusal
from form_handler.web import pages

log = logging.getLogger("form_handler.web.mail_routes")


class LinkUsed(LedgerRefusal):
    """The link did its work already (or its consent is gone); raised before anything is written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "token")


@dataclass(frozen=True)
class Link:
    purpose: tokens.Purpose
    path: str
    title: str
    lead: str
    button: str
    done_title: str
    done: str


LINKS = {
    link.path: link
    for link in (
        # One text for every receipt (the mail that brought the person here lists what that one asked for).
        Link("confirm", links.PATHS["confirm"], "Confirm your e-mail address",
             "This address was given on our feedback form with a request that we e-mail you when our {title} "
             "changes, that we share your e-mail address with third parties, or both: the e-mail that brought "
             "you here says which. Confirm that this address is yours and that you want this. Until you do, "
             "we do neither.",
             "Yes, this is my address and I want this", "Your address is confirmed",
             "What you asked for on our feedback form now applies: e-mails when our {title} changes (each "
             "with a link to stop them), sharing your e-mail address with third parties, or both, as you asked. "
             "You can withdraw your consent at any time with your receipt."),
        Link("reconsent", links.PATHS["reconsent"], "Agree to the new version",
             "Our {title} has changed. You can agree to the new version here.",
             "I agree to the new version", "Thank you: your agreement is recorded",
             "We recorded that you agreed to the new version of our {title}."),
        Link("withdraw", links.PATHS["withdraw"], "Withdraw your consent",
             "If you do not agree to the new version of our {title}, you can withdraw your consent here. "
             "We will then treat every choice you made on our feedback form with this address as not given.",
             "Withdraw my consent", "Your consent is withdrawn",
             "We will not contact you, send you e-mails about changes or share your address on the strength of it."),
        Link("unsubscribe", links.PATHS["unsubscribe"], "Stop e-mails about changes",
             "Stop the e-mails we send when our {title} changes. Nothing else you agreed to changes.",
             "Stop these e-mails", "You will get no more e-mails about changes",
             "We will not e-mail you when our {title} changes. Nothing else you agreed to has changed."),
    )
}


def check(purpose: str, claim: LinkClaim, view: LedgerView) -> subscribers.Person | None:
    """Raise LinkUsed when the link can no longer do its work; return the person it acts for."""
    if purpose == "confirm":
        state = subscribers.receipt_state(view, claim.receipt_id)
        if state is None or state["withdrawn"] or state["erased"]:
            raise LinkUsed("The consent this link belongs to was withdrawn or erased, so there is nothing to confirm.")
        if state["confirmed"]:
            raise LinkUsed("This link was already used: your address is confirmed.")
        # Something to confirm while the receipt's change e-mails or its third-party consent still stand.
        if not state["updates"] and not state["third_parties"]:
            raise LinkUsed("Neither e-mails about changes nor sharing your address stand any more, so there is "
                           "nothing to confirm.")
        return None
    person = subscribers.person_of(view, claim.receipt_id)
    if purpose == "unsubscribe":
        return person  # stopping twice is not an error: the page says they are off the list
    if person is None:
        raise LinkUsed("Your consent was already withdrawn or erased, so this link has nothing left to do.")
    if purpose == "reconsent" and claim.version in person.agreed:
        raise LinkUsed("This link was already used: you have agreed to this version.")
    return person


Append = tuple[str, str, dict[str, Any]]  # (kind, receipt_id, fields) for LedgerTxn.append


@dataclass(frozen=True)
class Decision:
    """What a link's POST is to write, decided on one read snapshot, and what that decision read."""

    appends: tuple[Append, ...]
    seen: subscribers.Seen


def appends(purpose: str, claim: LinkClaim, person: subscribers.Person | None) -> tuple[Append, ...]:
    """The entries a link records, once check() let it through."""
    if purpose == "confirm":
        return (("confirmation", claim.receipt_id, {"policy_id": claim.policy_id}),)
    if purpose == "reconsent":
        return (("reconsent", claim.receipt_id, {"policy_id": claim.policy_id, "policy_version": claim.version}),)
    if person is None:
        return ()
    if purpose == "withdraw":
        # No flags: every consent of every standing receipt of the address.
        return tuple(("withdrawal", receipt_id, {}) for receipt_id in person.receipt_ids)
    # consent_updates false: these withdrawals stop the e-mails and nothing else.
    return tuple(("withdrawal", receipt_id, {"consent_updates": False}) for receipt_id in person.updates_receipt_ids)


def decide(purpose: str, claim: LinkClaim, view: LedgerView) -> Decision:
    """check() and appends() on one read snapshot, with what they read."""
    person = check(purpose, claim, view)
    return Decision(appends(purpose, claim, person), subscribers.seen(view, claim.receipt_id))


def record(purpose: str, claim: LinkClaim, txn: LedgerTxn, decided: Decision | None = None) -> int:
    """Write inside the writer's transaction; return how many entries were added.

    `decided` (from decide() before the transaction) is written as it is unless an entry appended since its
    snapshot touches this address (changed_since: only those entries are read); then, or without it, the
    decision is made again here, on the transaction's own view, which may raise LinkUsed."""
    if decided is None or subscribers.changed_since(txn, decided.seen):
        todo = appends(purpose, claim, check(purpose, claim, txn))
    else:
        todo = decided.appends
    for kind, receipt_id, fields in todo:
        txn.append(kind, receipt_id, **fields)
    return len(todo)


def _keys(request: Request, now: float) -> tuple[bytes, ...]:
    keys: LinkKeys = request.state.service.keys
    return keys.verifying(now)


async def _title(request: Request, policy_id: str) -> tuple[str, str | None]:
    svc = request.state.service
    try:
        entry = (await svc.manifest.policies()).get(policy_id)
    except ManifestUnavailable:
        entry = None
    if entry is None:
        return policy_id, None
    return entry.title, f"{svc.settings.base_url}/{entry.url}"


async def _page(request: Request, link: Link, status: int, *, claim: LinkClaim | None, title: str,
                lead: str, details: str = "", button: str = "", note: str = "") -> Response:
    site_url = request.state.service.settings.base_url
    policy_title, policy_url = await _title(request, claim.policy_id) if claim else (None, None)
    action = f"{link.path}?token={request.query_params.get('token', '')}" if button else None
    return pages._page(
        "mail_link.html", status, site_url, title=title, description=link.title, lead=lead, details=details,
        action=action, button=button, note=note, policy_title=policy_title, policy_url=policy_url,
    )


async def show(request: Request) -> Response:
    """GET: say what the link will do, with a button; records nothing."""
    link = LINKS[request.url.path]
    try:
        now = time.time()
        claim = tokens.verify(_keys(request, now), request.query_params.get("token", ""), link.purpose, now=now)
        ledger: LedgerStore = request.state.service.ledger
        # One read snapshot in a worker thread; a ledger that cannot be read is a 503 (web/errors.py, unavailable()).
        person = await run_in_threadpool(ledger.read, lambda view: check(link.purpose, claim, view))
    except TokenRefused as e:
        return await _page(request, link, e.status, claim=None, title="This link cannot be used", lead=e.reason)
    except LinkUsed as e:
        return await _page(request, link, 410, claim=None, title="This link cannot be used", lead=str(e))
    title, _ = await _title(request, claim.policy_id)
    if link.purpose == "unsubscribe" and (person is None or not person.updates_receipt_ids):
        return await _page(request, link, 200, claim=claim, title=link.done_title, lead=link.done.format(title=title))
    return await _page(request, link, 200, claim=claim, title=link.title, lead=link.lead.format(title=title),
                       button=link.button)


async def act(request: Request) -> Response:
    """POST: record the confirmation, agreement, withdrawal or unsubscribe, once; then say so."""
    link = LINKS[request.url.path]
    svc = request.state.service
    try:
        now = time.time()
        claim = tokens.verify(_keys(request, now), request.query_params.get("token", ""), link.purpose, now=now)
        if link.purpose == "reconsent" and await svc.manifest.check(claim.policy_id, claim.version):
            raise LinkUsed("The version this link agrees to is no longer published; nothing was recorded.")
        # Decided on a read snapshot, outside the write lock; a used link ends here with 410.
        ledger: LedgerStore = svc.ledger
        decided = await run_in_threadpool(ledger.read, lambda view: decide(link.purpose, claim, view))
        added = 0
        if decided.appends:  # nothing to write (unsubscribing twice): no write transaction at all
            added = await ledger.submit(functools.partial(record, link.purpose, claim, decided=decided))
    except TokenRefused as e:
        return await _page(request, link, e.status, claim=None, title="This link cannot be used", lead=e.reason,
                           note="Nothing was recorded.")
    except LinkUsed as e:
        return await _page(request, link, 410, claim=None, title="This link cannot be used", lead=str(e),
                           note="Nothing was recorded.")
    log.info("%s recorded (%d entries)", link.purpose, added)
    title, _ = await _title(request, claim.policy_id)
    return await _page(request, link, 200, claim=claim, title=link.done_title, lead=link.done.format(title=title))


async def unavailable(request: Request) -> Response:
    """The 503 page of a link whose ledger (or manifest) cannot be used now; web/errors.py calls it."""
    link = LINKS[request.url.path]
    if request.method == "POST":
        return await _page(request, link, 503, claim=None, title="Please try again later",
                           lead="We cannot record this now; nothing was recorded. Please open the link again later.")
    return await _page(request, link, 503, claim=None, title="Please try again later",
                       lead="We cannot read our records now. Please open the link again later.")


ROUTES: list[BaseRoute] = [
    route
    for path in LINKS
    for route in (Route(path, show, methods=["GET"]), Route(path, act, methods=["POST"]))
]


def _openapi(link: Link) -> dict[str, Any]:
    token = [{"name": "token", "in": "query", "required": True, "schema": {"type": "string", "maxLength": 1024},
              "description": "The signed, expiring token from the e-mail link."}]
    html = {"text/html": {"schema": {"type": "string"}}}
    refused = {"400": {"description": "Forged or damaged link; nothing recorded.", "content": html},
               "410": {"description": "Expired or already used link; nothing recorded.", "content": html}}
    return {
        "get": {"summary": f"{link.title}: a page with a button (records nothing).", "parameters": token,
                "responses": {"200": {"description": "The page.", "content": html}, **refused,
                              "503": {"description": "The ledger cannot be read now.", "content": html}}},
        "post": {"summary": f"{link.title}: record it." + (
                     " Also the RFC 8058 one-click target (body List-Unsubscribe=One-Click)."
                     if link.purpose == "unsubscribe" else ""),
                 "parameters": token,
                 "responses": {"200": {"description": "Recorded.", "content": html}, **refused,
                               "503": {"description": "Cannot record now; nothing recorded.", "content": html}}},
    }


# Merged into the service's OpenAPI document (form_handler/openapi.py).
OPENAPI_PATHS: dict[str, Any] = {path: _openapi(link) for path, link in LINKS.items()}
