"""The one place that turns refusals and ledger errors into HTTP statuses (Starlette exception_handlers).

Routes raise typed errors and never catch a ledger error to pick a status: a refusal of the request
(`Refused`, from reading and checking it), what the ledger refuses (`UnknownReceipt` 404, `InvalidToken`
403, any other `LedgerRefusal` 422, each naming its field), and a ledger or manifest that cannot be used
now (503 with Retry-After; nothing was stored, except after LedgerOutcomeUnknown, which says it may have
been). A JSON caller gets {"errors": {field: sentence}}; a browser that posted a form gets the same as a page.
The pages behind e-mail links answer with their own page (mail_routes.unavailable).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from form_handler.consent import links
from form_handler.consent.manifest import ManifestUnavailable
from form_handler.ledger.types import (
    InvalidToken, LedgerError, LedgerOutcomeUnknown, LedgerRefusal, LedgerUnavailable, UnknownReceipt,
)
from form_handler.web import pages
from form_handler.web.bodies import Refused, wants_json

log = logging.getLogger("form_handler")
NO_STORE = {"Cache-Control": "no-store"}
RETRY_AFTER = "5"


def refusal(request: Request, status: int, errors: dict[str, str], *, headers: dict[str, str] | None = None) -> Response:
    """The same refusal as JSON ({"errors": ...}) or, for a plain form post, as an HTML page."""
    log.info("%s %s refused %d: %s", request.method, request.url.path, status, ", ".join(sorted(errors)))
    if wants_json(request) or request.method != "POST":
        return JSONResponse({"errors": errors}, status_code=status, headers={**NO_STORE, **(headers or {})})
    site_url = request.state.service.settings.base_url
    # The feedback route notes the page its form was on, so the error page can link back to it.
    page = pages.error_page(status, errors, site_url=site_url, back_path=getattr(request.state, "back", ""))
    page.headers.update(headers or {})
    return page


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return refusal(request, exc.status, exc.errors, headers=exc.headers)


async def ledger_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LedgerRefusal)
    if isinstance(exc, UnknownReceipt):
        return refusal(request, 404, {exc.field: "No receipt with this id is in the ledger; check your receipt."})
    if isinstance(exc, InvalidToken):
        return refusal(request, 403, {exc.field: "This withdraw token does not belong to that receipt; check your receipt."})
    return refusal(request, 422, {exc.field: str(exc)})


async def unavailable(request: Request, exc: Exception) -> Response:
    """503: the ledger cannot be written or read now, or the policy manifest cannot be read; nothing was stored."""
    if request.url.path in links.PATHS.values():
        from form_handler.web import mail_routes  # the pages behind e-mail links have their own 503 page

        log.error("cannot %s %s: %s", "record" if request.method == "POST" else "check", request.url.path, exc)
        return await mail_routes.unavailable(request)
    if isinstance(exc, ManifestUnavailable):
        log.error("policy manifest unavailable: %s", exc)
        errors = {"policy_version": "The list of published policies cannot be read now; try again later."}
        return refusal(request, 503, errors, headers={"Retry-After": "10"})
    log.error("ledger unavailable: %s", exc)
    if isinstance(exc, LedgerOutcomeUnknown):  # the writer was lost mid-batch: a plain "nothing stored" could lie
        errors = {"ledger": "We could not confirm that this was recorded: it may have been. Sending it again may "
                            "record it twice; if you need a receipt, try again later."}
    elif request.method == "POST":
        errors = {"ledger": "We cannot record this now; nothing was stored. Try again later."}
    else:
        errors = {"ledger": "The ledger cannot be read now; try again later."}
    return refusal(request, 503, errors, headers={"Retry-After": RETRY_AFTER})


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 500:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
    detail = exc.detail if isinstance(exc, HTTPException) else "Something went wrong on our side; nothing was stored."
    return JSONResponse({"errors": {"request": detail}}, status_code=status, headers=getattr(exc, "headers", None))


# Most specific first is not needed: Starlette looks up each exception's class and its bases in MRO order.
# LedgerError beyond LedgerUnavailable (e.g. a schema this version cannot read) is a 503 as well: the
# service cannot use its ledger now, and nothing was stored.
HANDLERS: dict[Any, Any] = {
    Refused: refused,
    LedgerRefusal: ledger_refused,
    LedgerUnavailable: unavailable,
    LedgerError: unavailable,
    ManifestUnavailable: unavailable,
    HTTPException: http_error,
    Exception: http_error,
}
