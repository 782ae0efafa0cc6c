"""Body-size limit on the byte stream, and the per-client rate limit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from form_handler.web.limits import BodyLimitMiddleware, RateLimiter

seen: list[int] = []


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    seen.append(len(body))
    return JSONResponse({"received": len(body)})


def make_client(max_body: int = 100) -> TestClient:
    app = Starlette(routes=[Route("/", echo, methods=["POST"])],
                    middleware=[Middleware(BodyLimitMiddleware, max_body=max_body)])
    return TestClient(app)


def chunks(total: int, size: int = 10) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


def test_body_at_the_limit_passes() -> None:
    assert make_client().post("/", content=b"x" * 100).json() == {"received": 100}


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    seen.clear()
    response = make_client().post("/", content=b"x" * 101)
    assert response.status_code == 413 and "100 bytes" in response.json()["errors"]["body"]
    assert seen == []


def test_chunked_body_without_length_is_counted() -> None:
    seen.clear()
    response = make_client().post("/", content=chunks(1000))
    assert response.status_code == 413 and seen == []


def test_lying_content_length_is_counted_on_the_stream() -> None:
    seen.clear()
    app = make_client().app

    async def run() -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []
        bodies = iter([b"x" * 60, b"x" * 60, b""])

        async def receive() -> dict[str, object]:
            body = next(bodies)
            return {"type": "http.request", "body": body, "more_body": bool(body)}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"10")],
                 "query_string": b"", "root_path": "", "scheme": "http", "server": ("t", 80), "client": None}
        await app(scope, receive, send)  # type: ignore[arg-type]
        return sent

    sent = anyio.run(run)
    assert sent[0]["status"] == 413 and seen == []


def test_rate_limiter_allows_the_limit_then_says_when_to_retry() -> None:
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.hit("a") for _ in range(3)] == [None, None, None]
    assert limiter.hit("a") == 60.0
    assert limiter.hit("b") is None  # another client is not affected
    now[0] = 30.0
    assert limiter.hit("a") == 30.0


def test_rate_limiter_window_slides() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.hit("a")
    now[0] = 40.0
    limiter.hit("a")
    now[0] = 60.5  # the first hit left the window, the second has not
    assert limiter.hit("a") is None and limiter.hit("a") is not None


def test_rate_limiter_wait_says_when_without_counting() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [limiter.wait("a") for _ in range(5)] == [None] * 5 and len(limiter) == 0  # never counted
    limiter.hit("a"), limiter.hit("a")
    assert limiter.wait("a") == 60.0 and limiter.wait("b") is None
    now[0] = 60.0  # the window passed
    assert limiter.wait("a") is None and limiter.hit("a") is None


def test_rate_limiter_zero_is_off() -> None:
    limiter = RateLimiter(0)
    assert all(limiter.hit("a") is None for _ in range(1000)) and len(limiter) == 0


def test_rate_limiter_memory_is_bounded_and_expires() -> None:
    now = [0.0]
    limiter = RateLimiter(5, max_clients=100, clock=lambda: now[0])
    for i in range(1000):
        limiter.hit(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    now[0] = 61.0
    limiter.hit("10.9.9.9")
    assert len(limiter) == 1


def test_rate_limiter_keeps_no_address_in_memory() -> None:
    limiter = RateLimiter(5)
    limiter.hit("203.0.113.7")
    assert all(b"203.0.113.7" not in key for key in limiter._hits)


def _run_asgi(app: Any, bodies: list[tuple[bytes, float]], headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """Drive the ASGI app directly: each body chunk arrives after its delay in seconds."""
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        chunks = iter(bodies)

        async def receive() -> dict[str, Any]:
            try:
                body, delay = next(chunks)
            except StopIteration:
                await anyio.sleep(3600)  # the rest never comes
                raise
            await anyio.sleep(delay)
            return {"type": "http.request", "body": body, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b"",
                 "root_path": "", "scheme": "http", "server": ("t", 80), "client": None}
        await app(scope, receive, send)

    anyio.run(run)
    return sent


def test_body_that_stops_arriving_is_cut_off_with_408() -> None:
    seen.clear()
    app = Starlette(routes=[Route("/", echo, methods=["POST"])],
                    middleware=[Middleware(BodyLimitMiddleware, max_body=1000, body_timeout=0.3)])
    sent = _run_asgi(app, [(b"x" * 10, 0.0)], [(b"content-length", b"500")])
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"] and seen == []


def test_trickling_body_is_cut_off_at_the_total_deadline() -> None:
    seen.clear()
    app = Starlette(routes=[Route("/", echo, methods=["POST"])],
                    middleware=[Middleware(BodyLimitMiddleware, max_body=1000, body_timeout=0.3)])
    started = time.monotonic()
    sent = _run_asgi(app, [(b"x", 0.05)] * 100, [])
    assert sent[0]["status"] == 408 and time.monotonic() - started < 1.0 and seen == []
