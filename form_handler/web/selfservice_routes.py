"""Consent self-service routes: manage a receipt with its token, keep it as a file, ask what we hold.

- GET /api/manage: the form (receipt id + withdraw token; and the access request). POST /api/manage shows
  the receipt, asks to confirm an action, and records it: three POSTs, so nothing is recorded by one click
  and the token never appears in a URL.
- POST /api/receipt: the receipt as a JSON file (Content-Disposition: attachment), given its id and token.
- POST /api/access-request: e-mails a signed link, to that address only, that lists its receipts; the
  answer is the same whatever the address. GET /api/access?token=... lists them; POST acts on one.

Guessing is limited in memory only (a keyed hash of the client per process, as web/limits.py keeps it):
after MANAGE_FAILURES_PER_MINUTE wrong ids or tokens a client gets 429 on the manage routes until the
minute passes. Access requests: ACCESS_REQUESTS_PER_DAY per client, ACCESS_MAILS_PER_DAY per address
(mail/quota.py, keyed apart from the confirmation quota). Every refusal stores nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from form_handler.consent import selfservice, tokens
from form_handler.consent.addresses import email_key
from form_handler.consent.keys import LinkKeys
from form_handler.consent.manifest import ManifestUnavailable, PolicyEntry
from form_handler.consent.selfservice import ReceiptView
from form_handler.consent.submissions import _email as parse_email
from form_handler.ledger.contract import LedgerTxn, LedgerView
from form_handler.ledger.types import InvalidToken, LedgerError, LedgerRefusal, LedgerUnavailable, UnknownReceipt
from form_handler.mail import outbox, quota
from form_handler.mail.message import MailError, access_message
from form_handler.settings import Settings
from form_handler.web import pages
from form_handler.web import selfservice_pages as ui
from form_handler.web.bodies import Refused, read_fields
from form_handler.web.limits import RateLimiter
from form_handler.web.origins import origin_allowed

log = logging.getLogger("form_handler.web.selfservice")
T = TypeVar("T")

MANAGE_FAILURES_PER_MINUTE = 10
ACCESS_REQUESTS_PER_DAY = 5
ACCESS_QUOTA_LABEL = "access-request"  # keys.LinkKeys.derive(...): a count apart from the confirmation mails
DAY = 86400.0


@dataclass
class Limits:
    """Per process, in memory only: wrong ids or tokens per client a minute; access requests per client a day."""

    failures: RateLimiter = field(default_factory=lambda: RateLimiter(MANAGE_FAILURES_PER_MINUTE))
    access_clients: RateLimiter = field(default_factory=lambda: RateLimiter(ACCESS_REQUESTS_PER_DAY, window=DAY))


def _svc(request: Request) -> Any:
    return request.state.service


def _client(request: Request) -> str:
    return request.client.host if request.client else ""  # used here, in memory, and nowhere else


def _limits(request: Request) -> Limits:
    limits: Limits = _svc(request).selfservice
    return limits


def _text(fields: dict[str, Any], name: str, *, required: bool = True, limit: int = 256) -> str:
    value = fields.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise Refused(422, {name: f"{name} is required; copy it from your receipt."})
        return ""
    if not isinstance(value, str) or len(value) > limit or not value.strip().isprintable():
        raise Refused(422, {name: f"{name} is not one we could have issued; copy it from your receipt."})
    return value.strip()


def _wait_words(seconds: float) -> str:
    if seconds >= 3600:
        return f"{math.ceil(seconds / 3600)} hours"
    if seconds >= 120:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds)} seconds"


def _too_many(what: str, wait: float) -> Refused:
    return Refused(429, {what: f"Too many requests; try again in {_wait_words(wait)}."},
                   headers={"Retry-After": str(math.ceil(wait))})


async def _read(request: Request, fn: Callable[[LedgerView], T]) -> T:
    result: T = await run_in_threadpool(_svc(request).ledger.read, fn)
    return result


async def _policy(request: Request, policy_id: str) -> PolicyEntry | None:
    try:
        found: PolicyEntry | None = (await _svc(request).manifest.policies()).get(policy_id)
        return found
    except ManifestUnavailable:
        return None  # the receipt still shows, naming the policy by its id


def _refusal(request: Request, r: Refused) -> Response:
    """A refusal as the manage page with its one sentence, or as the error page; nothing was stored."""
    site_url = _svc(request).settings.base_url
    log.info("%s %s refused %d: %s", request.method, request.url.path, r.status, ", ".join(sorted(r.errors)))
    if request.url.path == ui.MANAGE_PATH and r.status in (403, 404):
        page = ui.manage_form(site_url, status=r.status, error=next(iter(r.errors.values())))
    else:
        # The 429 sentence says how long to wait (a minute of guesses, or a day of access mails).
        lead = "We have had several requests like this one in a short time." if r.status == 429 else None
        page = pages.error_page(r.status, r.errors, site_url=site_url, back_path=ui.MANAGE_PATH, lead=lead)
    page.headers.update(r.headers)
    return page


async def _guarded(request: Request, handler: Callable[[], Any]) -> Response:
    # The Origin check and the ledger's errors, the same for every self-service POST.
    try:
        if request.method == "POST" and not origin_allowed(request.headers.get("origin"), request, _svc(request).settings):
            raise Refused(403, {"origin": "This form may not be sent from another site; use the form on our site."})
        response: Response = await handler()
        return response
    except Refused as r:
        return _refusal(request, r)
    except (UnknownReceipt, InvalidToken) as e:
        # One clear sentence; counted, so that guessing stops rather than slows.
        _limits(request).failures.hit(_client(request))
        return _refusal(request, Refused(404 if isinstance(e, UnknownReceipt) else 403, {e.field: str(e)}))
    except LedgerRefusal as e:
        return _refusal(request, Refused(422, {e.field: str(e)}))
    except LedgerError as e:
        log.error("ledger unavailable: %s", e)
        what = "recorded" if isinstance(e, LedgerUnavailable) else "read"
        return _refusal(request, Refused(503, {"ledger": f"The ledger cannot be {what} now; nothing was stored. "
                                                          "Try again later."}, headers={"Retry-After": "5"}))


# --- the manage page: receipt id and withdraw token ------------------------------------------------------------

async def manage_form(request: Request) -> Response:
    """GET: the form that takes a receipt id and its withdraw token (and the access request)."""
    return ui.manage_form(_svc(request).settings.base_url)


async def _with_token(request: Request) -> tuple[ReceiptView, str, dict[str, Any]]:
    wait = _limits(request).failures.wait(_client(request))
    if wait is not None:
        raise _too_many("withdraw_token", wait)
    _, fields = await read_fields(request)
    receipt_id = _text(fields, "receipt_id")
    token = _text(fields, "withdraw_token")
    view = await _read(request, lambda v: selfservice.with_token(v, receipt_id, token))
    return view, token, fields


async def manage(request: Request) -> Response:
    """POST: show the receipt; with `action`, ask to confirm it; with `confirm=yes` too, record it."""

    async def handle() -> Response:
        view, token, fields = await _with_token(request)
        return await _act(request, view, fields, auth={"withdraw_token": token}, action_url=ui.MANAGE_PATH,
                          via=ui.MANAGE_PATH, download=True)

    return await _guarded(request, handle)


async def _act(request: Request, view: ReceiptView | None, fields: dict[str, Any], *, auth: dict[str, str],
               action_url: str, via: str, download: bool, listing: list[ReceiptView] | None = None) -> Response:
    svc = _svc(request)
    site_url = svc.settings.base_url
    action = _text(fields, "action", required=False, limit=32)
    if not action:
        shown = listing if listing is not None else [view] if view else []
        lead = ("Every receipt we hold for your e-mail address, newest first, as recorded."
                if listing is not None else "This receipt as we recorded it, and what still stands.")
        policies = [(v, await _policy(request, v.policy_id)) for v in shown]
        return ui.receipts_page(policies, site_url, title="Your receipts" if listing is not None else "Your receipt",
                                lead=lead, action_url=action_url, auth=auth, download=download)
    if view is None or action not in selfservice.ACTIONS:
        raise Refused(422, {"action": f"action must be one of {', '.join(selfservice.ACTIONS)}."})
    if _text(fields, "confirm", required=False, limit=8) != "yes":
        if action not in view.available():
            return ui.done_page(view, action, [], site_url, action_url=action_url, auth=auth)
        return ui.confirm_page(view, action, site_url, action_url=action_url, auth=auth)
    entries = await svc.ledger.submit(functools.partial(selfservice.record, view=view, action=action, via=via))
    log.info("self-service %s recorded (%d entries)", action, len(entries))
    return ui.done_page(view, action, entries, site_url, action_url=action_url, auth=auth)


async def receipt_download(request: Request) -> Response:
    """POST: the receipt as a JSON file to keep (attachment), given its id and withdraw token."""

    async def handle() -> Response:
        view, token, _ = await _with_token(request)
        body = ui.receipt_file(view, await _policy(request, view.policy_id), _svc(request).settings.base_url, token)
        return Response(json.dumps(body, indent=2, ensure_ascii=False) + "\n", media_type="application/json",
                        headers={**pages.HEADERS,
                                 "Content-Disposition": f'attachment; filename="receipt-{view.receipt_id}.json"'})

    return await _guarded(request, handle)


# --- "what do you hold about me?": a signed link to the address ---------------------------------------------

def _queue_access_mail(txn: LedgerTxn, address: str, *, settings: Settings, keys: LinkKeys,
                       now: float) -> tuple[bool, float]:
    """Take the address's place in the day's quota and queue the link when the address is held.

    Returns (allowed, seconds until the quota frees a place). The quota is taken for every address, held or
    not, so a refusal says nothing about who is in the ledger."""
    key = keys.derive(ACCESS_QUOTA_LABEL)
    if not quota.take(txn, key, address, limit=ui.ACCESS_MAILS_PER_DAY):
        oldest = txn.oldest_quota_row(quota.recipient_hmac(key, address))
        return False, _seconds_until_free(oldest, now)
    receipt_id = selfservice.latest_receipt(txn, email_key(address))
    if receipt_id is None:
        return True, 0.0
    token = tokens.sign(keys.signing, "access", receipt_id, "", "", now=now)
    try:
        msg = access_message(settings, to=address, access_url=f"{settings.base_url}{ui.ACCESS_PATH}?token={token}")
    except MailError:
        return True, 0.0  # an address our mail code refuses gets no mail, and the same answer
    outbox.enqueue(txn, receipt_id=receipt_id, kind="access", msg=msg)
    return True, 0.0


def _seconds_until_free(oldest: str | None, now: float) -> float:
    if oldest is None:
        return DAY
    at = datetime.fromisoformat(oldest.replace("Z", "+00:00")).timestamp()
    return max(at + quota.WINDOW.total_seconds() - now, 1.0)


async def access_request(request: Request) -> Response:
    """POST: e-mail a signed link listing the address's receipts; the same answer whatever the address."""

    async def handle() -> Response:
        svc = _svc(request)
        _, fields = await read_fields(request)
        errors: dict[str, str] = {}
        address = parse_email(fields.get("email"), errors)
        if errors or not address:
            raise Refused(422, errors or {"email": "email is required; give the address you used on our forms."})
        wait = _limits(request).access_clients.hit(_client(request))
        if wait is not None:
            raise _too_many("email", wait)
        now = time.time()
        allowed, wait = await svc.ledger.submit(functools.partial(
            _queue_access_mail, address=address, settings=svc.settings, keys=svc.keys, now=now))
        if not allowed:
            raise _too_many("email", wait)
        mailer = getattr(request.state, "mailer", None)
        if mailer is not None:
            mailer.wake()  # whether or not a mail was queued: the timing must not tell
        return ui.access_sent(svc.settings.base_url)

    return await _guarded(request, handle)


async def _claim_views(request: Request, token: str, receipt_id: str) -> tuple[list[ReceiptView], ReceiptView | None]:
    """The link's receipts (by the address of the receipt it names) and, when asked, the one to act on."""
    now = time.time()
    claim = tokens.verify(_svc(request).keys.verifying(now), token, "access", now=now)

    def read(v: LedgerView) -> tuple[list[ReceiptView], ReceiptView | None]:
        key = selfservice.address_key(v, claim.receipt_id)
        if key is None:
            raise tokens.TokenRefused("The receipt this link was sent for has been erased, so it lists nothing now; "
                                      "ask for a new link if we hold other receipts for your address.", 410)
        views = selfservice.of_address(v, key)
        if not receipt_id:
            return views, None
        target = next((x for x in views if x.receipt_id == receipt_id), None)
        if target is None:
            raise InvalidToken("That receipt is not one of this address's receipts.", "receipt_id")
        return views, target

    return await _read(request, read)


async def access_list(request: Request) -> Response:
    """GET (the link in the e-mail): every receipt of the address, with what each consented to and its state."""

    async def handle() -> Response:
        token = request.query_params.get("token", "")
        views, _ = await _claim_views(request, token, "")
        return await _act(request, None, {}, auth={"token": token},
                          action_url=ui.ACCESS_PATH, via=ui.ACCESS_PATH, download=False, listing=views)

    return await _tokened(request, handle)


async def access_act(request: Request) -> Response:
    """POST: the same actions as the manage page, on one receipt of the link's address."""

    async def handle() -> Response:
        _, fields = await read_fields(request)
        token = _text(fields, "token", limit=1024)
        receipt_id = _text(fields, "receipt_id", required=False)
        views, target = await _claim_views(request, token, receipt_id)
        if target is not None and _text(fields, "action", required=False, limit=32) == "erase":
            token = _link_after_erasure(request, token, target, views)
        return await _act(request, target, fields if target else {},
                          auth={"token": token}, action_url=ui.ACCESS_PATH, via=ui.ACCESS_PATH, download=False,
                          listing=None if target and fields.get("action") else views)

    return await _tokened(request, handle)


def _link_after_erasure(request: Request, token: str, target: ReceiptView, views: list[ReceiptView]) -> str:
    """The link names one receipt, and finds the address through it: erasing that one would leave the visitor's
    other receipts unreachable, so the pages after it carry a link naming another receipt of the same address
    (the visitor proved they hold it), expiring when the original does."""
    now = time.time()
    claim = tokens.verify(_svc(request).keys.verifying(now), token, "access", now=now)
    others = [v for v in views if v.receipt_id != target.receipt_id]
    if claim.receipt_id != target.receipt_id or not others:
        return token
    return tokens.sign(_svc(request).keys.signing, "access", others[0].receipt_id, "", "", now=now,
                       lifetime=max(claim.expires - int(now), 1))


async def _tokened(request: Request, handler: Callable[[], Any]) -> Response:
    try:
        return await _guarded(request, handler)
    except tokens.TokenRefused as e:
        return pages._page("mail_link.html", e.status, _svc(request).settings.base_url,
                           title="This link cannot be used", description="What do you hold about me?",
                           lead=e.reason, details="", action=None, button="",
                           note="Nothing was recorded. You can ask for a new link on the manage page.")


ROUTES: list[BaseRoute] = [
    Route(ui.MANAGE_PATH, manage_form, methods=["GET"]),
    Route(ui.MANAGE_PATH, manage, methods=["POST"]),
    Route(f"{pages.API_ROOT}/receipt", receipt_download, methods=["POST"]),
    Route(f"{pages.API_ROOT}/access-request", access_request, methods=["POST"]),
    Route(ui.ACCESS_PATH, access_list, methods=["GET"]),
    Route(ui.ACCESS_PATH, access_act, methods=["POST"]),
]


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


_FORM = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}}
_REFUSED = {"403": _html("Wrong token, or a form from another site; nothing recorded."),
            "404": _html("No receipt with this id; nothing recorded."),
            "422": _html("A field is missing or malformed; named on the page."),
            "429": _html("Too many wrong ids or tokens from this client this minute (Retry-After)."),
            "503": _html("The ledger cannot be read or written now; nothing recorded.")}
# Merged into the service's OpenAPI document (form_handler/web/openapi.py).
OPENAPI_PATHS: dict[str, Any] = {
    ui.MANAGE_PATH: {
        "get": {"summary": "Manage your consent: the form for a receipt id and its withdraw token.",
                "responses": {"200": _html("The form.")}},
        "post": {"summary": "receipt_id + withdraw_token: the receipt; with action (withdraw_contact, stop_updates, "
                            "withdraw_third_parties, withdraw, erase) a page asking to confirm; with confirm=yes too, "
                            "record it.",
                 "requestBody": _FORM, "responses": {"200": _html("The receipt, the question or what was recorded."),
                                                     **_REFUSED}},
    },
    f"{pages.API_ROOT}/receipt": {"post": {
        "summary": "receipt_id + withdraw_token: the receipt as a JSON file to keep (Content-Disposition: attachment).",
        "requestBody": _FORM, "responses": {"200": {"description": "The receipt file.", "content": {
            "application/json": {"schema": {"type": "object"}}}}, **_REFUSED}}},
    f"{pages.API_ROOT}/access-request": {"post": {
        "summary": "email: sends that address a signed link listing its receipts; the same answer for every address.",
        "requestBody": _FORM, "responses": {
            "200": _html("The same answer whether or not the address is held."),
            "403": _html("A form from another site."), "422": _html("Not an e-mail address."),
            "429": _html(f"More than {ACCESS_REQUESTS_PER_DAY} requests from this client, or "
                         f"{ui.ACCESS_MAILS_PER_DAY} mails to this address, in a day (Retry-After)."),
            "503": _html("The ledger cannot be written now.")}}},
    ui.ACCESS_PATH: {
        "get": {"summary": "The signed link from the e-mail: every receipt of that address, with its state.",
                "parameters": [{"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _html("The receipts."), "400": _html("Forged or damaged link."),
                              "410": _html("Expired link, or its receipt was erased.")}},
        "post": {"summary": "token + receipt_id (+ action, confirm): the same actions as the manage page.",
                 "requestBody": _FORM, "responses": {"200": _html("The question or what was recorded."),
                                                     "400": _html("Forged or damaged link."),
                                                     "410": _html("Expired link."), **_REFUSED}},
    },
}
