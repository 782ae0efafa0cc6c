"""The feedback service: `create_app(settings)` builds the Starlette app; routes live under /api/.

Every write goes through the ledger's group-commit writer, and a 2xx is sent only after its COMMIT returned.
Refusals are typed (400, 403, 404, 413, 415, 422, 429, 503), name the offending field, and store
nothing; routes raise them and web/errors.py turns them into responses. No route sets a cookie, and the
client's address is used for the rate limit only.
"""

from __future__ import annotations

import gc
import hmac
import logging
import math
import operator
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from form_handler.consent import keys as link_keys
from form_handler.consent.keys import LinkKeys
from form_handler.consent.manifest import Manifest, ManifestUnavailable
from form_handler.consent.submissions import ValidationFailed, parse_submission
from form_handler.ledger import export, open_ledger
from form_handler.ledger.contract import LedgerStore
from form_handler.ledger.types import LedgerError
from form_handler.mail import optin
from form_handler.mail.mailer import Mailer
from form_handler.settings import Settings
from form_handler.web import errors, mail_routes, pages, selfservice_routes
from form_handler.web.site_shell import ShellMiddleware, SiteShell
from form_handler.web.bodies import Refused, read_fields, wants_json
from form_handler.web.errors import NO_STORE
from form_handler.web.hosts import HostCheckMiddleware, allowed_hosts
from form_handler.web.limits import ADMIN_FAILURES_PER_MINUTE, BodyLimitMiddleware, RateLimiter
from form_handler.web.openapi import openapi_document
from form_handler.web.origins import origin_allowed
from form_handler.web.security_headers import SecurityHeadersMiddleware, content_security_policy

log = logging.getLogger("form_handler")
EXPORT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


@dataclass
class Service:
    """What the routes share for one lifespan: settings, the ledger, the manifest, the limiter."""

    settings: Settings
    # Reads (ledger.read), writes through its group-commit writer (await ledger.submit): never a connection.
    ledger: LedgerStore
    manifest: Manifest
    limiter: RateLimiter
    # The keys of signed e-mail links, read once at start-up from the environment or the key file.
    keys: LinkKeys
    # Wrong admin tokens per client, counted whatever POLICY_SITE_RATE_LIMIT says (it may be 0).
    admin_failures: RateLimiter = field(default_factory=lambda: RateLimiter(ADMIN_FAILURES_PER_MINUTE))
    # Self-service guessing and access-request limits, in memory only (web/selfservice_routes.py).
    selfservice: selfservice_routes.Limits = field(default_factory=selfservice_routes.Limits)


def service(request: Request) -> Service:
    svc: Service = request.state.service
    return svc


async def guard(request: Request) -> None:
    """Checks before reading a body: the Origin, then the rate limit."""
    svc = service(request)
    origin = request.headers.get("origin")
    if not origin_allowed(origin, request, svc.settings):
        raise Refused(403, {"origin": "This form may not be sent from another site; use the form on our site."})
    # The address is used here, in memory, and nowhere else.
    wait = svc.limiter.hit(request.client.host if request.client else "")
    if wait is not None:
        raise Refused(429, {"rate_limit": f"Too many submissions; try again in {math.ceil(wait)} seconds."},
                      headers={"Retry-After": str(math.ceil(wait))})


async def feedback(request: Request) -> Response:
    """Record one submission: 201 + receipt JSON, or the HTML receipt page for a plain form post."""
    svc = service(request)
    await guard(request)
    is_json, fields = await read_fields(request)
    page = fields.get("page")
    # Noted for an error page's link back to the form (web/errors.py).
    request.state.back = page.decode("utf-8", "replace") if isinstance(page, bytes) else page if isinstance(page, str) else ""
    draft = parse_submission(fields, is_json=is_json)
    if isinstance(draft, ValidationFailed):
        raise Refused(draft.status, draft.errors)
    errors_found = await svc.manifest.check(draft.policy_id, draft.policy_version)  # ManifestUnavailable: 503
    if errors_found:
        raise Refused(422, errors_found)
    # The consent and, when updates were asked for, the queued confirmation mail: one transaction.
    receipt = await optin.record_consent(request, draft)
    log.info("feedback recorded seq=%d", receipt.seq)
    policies = await svc.manifest.policies()
    if wants_json(request):
        body = {k: v for k, v in asdict(receipt).items() if k != "seq"}
        # The receipt page's own words, so the receipt shown in place says the same (feedback.js).
        words = pages.receipt_words(receipt, email=draft.email, policy=policies.get(receipt.policy_id),
                                    site_url=svc.settings.base_url)
        return JSONResponse(body | {"withdraw_url": "/api/withdraw"} | words, status_code=201, headers=NO_STORE)
    return pages.receipt_page(receipt, email=draft.email, message=draft.message,
                              policy=policies.get(receipt.policy_id), site_url=svc.settings.base_url)


def _token_field(name: str, value: Any, errors: dict[str, str]) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or not value.strip():
        errors[name] = f"{name} is required; copy it from your receipt."
        return ""
    if len(value) > 256 or not value.strip().isprintable():
        errors[name] = f"{name} is not one we could have issued; copy it from your receipt."
    return value.strip()


async def withdraw(request: Request) -> Response:
    """Withdraw every consent of one receipt, given its withdraw token."""
    svc = service(request)
    await guard(request)
    is_json, fields = await read_fields(request)
    errors_found: dict[str, str] = {}
    if is_json:
        errors_found.update({k[:64]: f"{k[:64]} is not a field here; remove it."
                             for k in fields if k not in ("receipt_id", "withdraw_token")})
    receipt_id = _token_field("receipt_id", fields.get("receipt_id"), errors_found)
    token = _token_field("withdraw_token", fields.get("withdraw_token"), errors_found)
    if errors_found:
        raise Refused(422, errors_found)
    # UnknownReceipt 404, InvalidToken 403. Operations are data (picklable), for the writer process.
    entry = await svc.ledger.submit(operator.methodcaller("withdraw", receipt_id, token))
    if wants_json(request):
        return JSONResponse({"receipt_id": receipt_id, "withdrawn": True, "withdrawn_at": entry.recorded_at},
                            headers=NO_STORE)
    return pages.withdrawn_page(receipt_id, site_url=svc.settings.base_url)


async def stats(request: Request) -> Response:
    """Aggregate counts only; any count below 5 is null or left out."""
    return JSONResponse(await run_in_threadpool(service(request).ledger.stats), headers=NO_STORE)


async def ledger_head(request: Request) -> Response:
    """The checkpoint: entry count and head hash, nothing personal; keep copies as a witness."""
    return JSONResponse(asdict(await run_in_threadpool(service(request).ledger.head)), headers=NO_STORE)


async def healthz(request: Request) -> Response:
    """200 when the ledger is readable and the policy manifest can be read; 503 otherwise."""
    body: dict[str, Any] = {"ledger": "ok", "manifest": "ok"}
    try:
        body["entries"] = (await run_in_threadpool(service(request).ledger.head)).count
    except LedgerError:
        body["ledger"] = "unavailable"
    try:
        await service(request).manifest.policies()
    except ManifestUnavailable:
        body["manifest"] = "unavailable"
    ok = body["ledger"] == body["manifest"] == "ok"
    return JSONResponse({"status": "ok" if ok else "unavailable", **body}, status_code=200 if ok else 503,
                        headers=NO_STORE)


async def export_ledger(request: Request) -> Response:
    """Stream the ledger as JSON Lines, or CSV with ?format=csv (admin token required)."""
    svc = service(request)
    settings = svc.settings
    if settings.admin_token is None:
        return JSONResponse({"errors": {"export": "The export is off: no admin token is configured."}}, 404)
    client = request.client.host if request.client else ""
    # A client that sent too many wrong tokens waits, whatever it sends now: guessing stops rather than slows.
    wait = svc.admin_failures.wait(client)
    if wait is not None:
        seconds = str(math.ceil(wait))
        return JSONResponse({"errors": {"authorization": f"Too many wrong tokens; try again in {seconds} seconds."}},
                            429, headers={**NO_STORE, "Retry-After": seconds})
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.admin_token.encode()):
        svc.admin_failures.hit(client)  # only failures count: the right token never locks its owner out
        return JSONResponse({"errors": {"authorization": "Send Authorization: Bearer <admin token>."}}, 401,
                            headers={"WWW-Authenticate": 'Bearer realm="policy-site"'})
    fmt = request.query_params.get("format", "jsonl")
    if fmt not in EXPORT_TYPES:
        return JSONResponse({"errors": {"format": "format must be jsonl or csv."}}, 422)
    third_party = request.query_params.get("third_party", "") in ("1", "true", "yes")
    rows = export.ExportRows(svc.ledger.export(third_party=third_party))
    try:
        # Read before answering: once the 200 is sent, a ledger that cannot be read could only cut the body short.
        await run_in_threadpool(rows.prefetch)
    except LedgerError:
        rows.close()
        raise
    # A sync iterator: Starlette pulls it in a worker thread, one row at a time.
    lines = export.lines(rows, fmt, third_party=third_party)
    return ClosingStream(rows.close, lines, media_type=EXPORT_TYPES[fmt],
                         headers={**NO_STORE, "Content-Disposition": f'attachment; filename="ledger.{fmt}"'})


class ClosingStream(StreamingResponse):
    """A StreamingResponse that calls `close` however it ends: sent, client gone or failed."""

    def __init__(self, close: Callable[[], None], content: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._close()  # never blocks (ExportRows.close), so it is safe on the event loop


async def openapi(request: Request) -> Response:
    """This API described in OpenAPI 3.1."""
    return JSONResponse(openapi_document(service(request).settings))


async def stylesheet(request: Request) -> Response:
    """The stylesheet of the service's own pages."""
    return FileResponse(pages.STYLESHEET, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


ROUTES: list[BaseRoute] = [
    Route("/api/feedback", feedback, methods=["POST"]),
    Route("/api/withdraw", withdraw, methods=["POST"]),
    Route("/api/stats", stats, methods=["GET"]),
    Route("/api/export", export_ledger, methods=["GET"]),
    Route("/api/healthz", healthz, methods=["GET"]),
    Route("/api/ledger/head", ledger_head, methods=["GET"]),
    Route("/api/openapi.json", openapi, methods=["GET"]),
    Route("/api/pages.css", stylesheet, methods=["GET"]),
    *mail_routes.ROUTES,  # /api/confirm, /api/reconsent, /api/withdraw-consent, /api/unsubscribe
    *selfservice_routes.ROUTES,  # /api/manage, /api/receipt, /api/access-request, /api/access
]


_frozen = False


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, templates, the app) out of the cyclic collector's sight.

    Those objects live as long as the process, yet every full collection walked them all again, a pause for
    every request in flight: at 50 connections the p99 fell from 53-62 ms to 38-43 ms with this, throughput
    unchanged (bench/README.md, "Fewer collector pauses"). Once per process: a test run starts many apps, and what
    one freeze holds is never freed.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


def create_app(settings: Settings, *, site_dir: Path | None = None, writer: Any = None) -> Starlette:
    """Build the service. With site_dir, the built site is served at / beside the API (one process).

    The ledger is settings.ledger (a SQLite path or a postgresql:// URL), opened in the lifespan: its writer
    drains on shutdown. A SQLite `writer` passed in (a started GroupCommitWriter, for tests) is used as it is.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # Opens even while the database is down (every operation then answers 503 until it is back).
        ledger = await run_in_threadpool(open_ledger, settings.ledger)
        try:
            await run_in_threadpool(lambda: ledger.start(writer, process=settings.ledger_writer_process))
            # Refused here, at start-up, when the key file is readable by others: better no service than forgeable links.
            try:
                keys = await run_in_threadpool(link_keys.load, settings)
            except link_keys.KeyFileError as e:
                log.error("%s", e)  # one sentence with the fix, above uvicorn's "Application startup failed"
                raise
            svc = Service(settings, ledger, Manifest(settings.manifest), RateLimiter(settings.rate_limit), keys)
            # Sends queued mail (address confirmations) in the background, retrying with back-off.
            # It opens the ledger again for itself: its passes never wait for a connection a request holds.
            mailer = Mailer(settings)
            mailer.start()
            freeze_startup_objects()
            try:
                yield {"service": svc, "mailer": mailer}
            finally:
                await mailer.stop()
        finally:
            await run_in_threadpool(ledger.close)  # drains what is queued: acknowledged means committed

    def body_refusal(scope: Scope, status: int, errors: dict[str, str]) -> Response:
        request = Request(scope)
        if wants_json(request) or request.method != "POST":
            return JSONResponse({"errors": errors}, status_code=status, headers=NO_STORE)
        return pages.error_page(status, errors, site_url=settings.base_url)

    form_origins = [settings.base_url, *settings.allowed_origins]
    routes = list(ROUTES)
    if site_dir is not None:
        # The static site is compressed (Lighthouse: ~200 KiB less on a first visit); /api is not, since
        # compressed responses that echo secrets (the withdraw token) invite BREACH-style guessing.
        site = GZipMiddleware(StaticFiles(directory=site_dir, html=True), minimum_size=500)
        # Its own policy, kept by the app's: Material's pages run inline scripts (its 404 page under /api/ too).
        routes.append(Mount("/", app=SecurityHeadersMiddleware(
            site, csp=content_security_policy(form_origins, inline=True)), name="site"))
    middleware = [
        # First, before anything reads the Host header (the Origin check, redirects).
        Middleware(HostCheckMiddleware, hosts=allowed_hosts(form_origins)),
        Middleware(BodyLimitMiddleware, max_body=settings.max_body, refusal=body_refusal),
        # The service's pages take the built site's look (SITE_DIR/policy-shell.html) when it is there.
        Middleware(ShellMiddleware, shell=SiteShell(site_dir or settings.site_dir, form_origins)),
    ]
    if settings.allowed_origins:
        # CORS before the rest, so refusals to an allowed origin still carry its headers. Only when another origin
        # may call: with none, it would add nothing but `Vary: Origin`, at ~17 us of the event loop per request.
        middleware.insert(1, Middleware(CORSMiddleware, allow_origins=list(settings.allowed_origins),
                                        allow_methods=["GET", "POST"], allow_headers=["Content-Type", "Accept"],
                                        expose_headers=["Retry-After"]))
    if settings.forwarded_allow_ips:
        # Only these proxies' X-Forwarded-For and -Proto are believed, so request.client (the rate limits' key)
        # is the real client. Nobody's by default: uvicorn's own default trusts 127.0.0.1, so the README's
        # command and `policy-site serve` turn uvicorn's off and leave this setting the only trust.
        middleware.insert(1, Middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.forwarded_allow_ips)))
    app = Starlette(
        debug=False,
        routes=routes,
        middleware=middleware,
        exception_handlers=errors.HANDLERS,
        lifespan=lifespan,
    )
    # Outside Starlette's ServerErrorMiddleware (always the outermost of its stack), so a 500 has them too.
    app.middleware_stack = SecurityHeadersMiddleware(app.build_middleware_stack(),
                                                     csp=content_security_policy(form_origins, inline=False))
    return app


def _app_from_env() -> Starlette:
    return create_app(Settings.from_env())


app = _app_from_env()
