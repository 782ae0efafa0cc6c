"""Request limits: the body size, counted on the byte stream, and a per-client submission rate.

Neither Starlette nor uvicorn limits a request body, and Content-Length can lie (or be absent, with
chunked encoding), so the body limit counts the bytes the app actually receives. Nor does either put a
deadline on a body that trickles in (or never comes), so the whole body must arrive within body_timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Wrong admin tokens one client may send per minute (GET /api/export), whatever POLICY_SITE_RATE_LIMIT says.
ADMIN_FAILURES_PER_MINUTE = 10

# Builds the 413 answer; the app passes one that renders HTML for form posts.
Refusal = Callable[[Scope, int, dict[str, str]], Response]


class BodyTooLarge(Exception):
    """Raised from receive() once more than max_body bytes arrived."""


class BodyTooSlow(Exception):
    """Raised from receive() when the body has not fully arrived within body_timeout seconds."""


def json_refusal(scope: Scope, status: int, errors: dict[str, str]) -> Response:
    return JSONResponse({"errors": errors}, status_code=status)


class BodyLimitMiddleware:
    """413 when a body is, or claims to be, over max_body bytes; 408 when it trickles in too slowly.

    uvicorn has no timeout for a body that stops arriving (or never comes, under a lying
    Content-Length), so one slow client could hold a connection and a task for ever.
    """

    def __init__(self, app: ASGIApp, max_body: int, refusal: Refusal = json_refusal,
                 body_timeout: float = 10.0) -> None:
        self.app = app
        self.max_body = max_body
        self.refusal = refusal
        self.body_timeout = body_timeout

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        response = self.refusal(scope, status, {"body": message})
        # The rest of the body is never read, so the connection cannot carry another request.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"The request body is larger than {self.max_body} bytes; shorten the message."
        for name, value in scope["headers"]:
            if name == b"content-length":
                # Refuse up front, before reading a byte; an unparsable length is left to the stream count.
                if value.strip().isdigit() and int(value) > self.max_body:
                    await self._refuse(scope, receive, send, 413, too_large)
                    return
        received = 0
        body_done = False
        started = False
        deadline = time.monotonic() + self.body_timeout

        async def counted_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # e.g. a streaming response listening for the disconnect: no deadline
                return await receive()
            try:
                # asyncio.timeout, not wait_for: wait_for wraps receive() in a new task each time (~20 us).
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_body:
                    raise BodyTooLarge()
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except (BodyTooLarge, BodyTooSlow) as e:
            if started:  # cannot happen for our routes, which read the body before answering
                raise
            if isinstance(e, BodyTooLarge):
                await self._refuse(scope, receive, send, 413, too_large)
            else:
                await self._refuse(scope, receive, send, 408,
                                   f"The request body did not arrive within {self.body_timeout:g} seconds.")


class RateLimiter:
    """Sliding-window limit of `per_minute` hits per client; 0 turns it off.

    Client addresses are kept only as keyed hashes (a random key per process, never stored), only in
    memory, and only for a minute; at most `max_clients` are tracked, the least recently seen dropped first.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        window: float = 60.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._hits: OrderedDict[bytes, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._hits)

    def hit(self, client: str) -> float | None:
        """Count one hit; return None if allowed, else the seconds until the client may try again."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        key = self._key_of(client)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        self._hits.move_to_end(key)
        wait = self._blocked(hits, now)
        if wait is not None:
            return wait
        hits.append(now)
        self._evict(now)
        return None

    def wait(self, client: str) -> float | None:
        """Like hit, without counting this call: None if the client may go on, else the seconds until it may."""
        hits = self._hits.get(self._key_of(client))
        if self.per_minute <= 0 or hits is None:
            return None
        return self._blocked(hits, self._clock())

    def _blocked(self, hits: deque[float], now: float) -> float | None:
        # Drop the hits that left the window; a full window waits until its oldest hit leaves it.
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return max(hits[0] + self.window - now, 0.001) if len(hits) >= self.per_minute else None

    def _key_of(self, client: str) -> bytes:
        return hmac.new(self._key, client.encode("utf-8", "replace"), hashlib.sha256).digest()

    def _evict(self, now: float) -> None:
        while len(self._hits) > self.max_clients:
            self._hits.popitem(last=False)
        # The oldest entries go first once their window passed, so memory follows the live clients.
        while self._hits:
            key, hits = next(iter(self._hits.items()))
            if hits and hits[-1] > now - self.window:
                break
            del self._hits[key]

