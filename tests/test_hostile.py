"""Hostile bytes against a real uvicorn: each gets its 4xx or is cut off, nothing is stored, and other
clients keep being served meanwhile. Raw sockets, because httpx would refuse to send most of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import httpx
import pytest

from faultkit import PAGE, POLICY_ID, VERSION, Server, record, submission, write_manifest

# The longest a body may take to arrive, plus slack for a loaded machine; the service's own deadline
# (form_handler/limits.py) must be below it.
CUT_OFF_WITHIN = 30.0
FORM = f"policy_id={POLICY_ID}&policy_version={VERSION}&page={PAGE}".encode()


@dataclass(frozen=True)
class Reply:
    status: int | None  # None: the server closed the connection without an answer
    seconds: float


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hostile")
    srv = Server(tmp, tmp / "ledger.sqlite3", write_manifest(tmp / "policy-versions.json"))
    srv.start()
    try:
        asyncio.run(srv.ready())
        yield srv
    finally:
        srv.stop()


def head(server: Server) -> int:
    r = httpx.get(server.url + "/api/ledger/head", timeout=10)
    assert r.status_code == 200, r.text
    return int(r.json()["count"])


def request_head(server: Server, content_type: str, length: int | None, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"POST /api/feedback HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: {content_type}\r\n"
            f"{framing}{extra}\r\n").encode()


async def exchange(server: Server, head_bytes: bytes, chunks: Sequence[bytes], *, delay: float = 0.0,
                   timeout: float = CUT_OFF_WITHIN) -> Reply:
    """Send a request (body in chunks, `delay` apart) while waiting for the status line."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

    async def send() -> None:
        writer.write(head_bytes)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            if delay:
                await asyncio.sleep(delay)

    sender = asyncio.create_task(send())
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except ConnectionError:
        line = b""
    except TimeoutError:
        raise AssertionError(f"no answer and no cut-off within {timeout} s") from None
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    status = int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else None
    return Reply(status, time.monotonic() - started)


def send(server: Server, content_type: str, body: bytes, length: int | None = -1) -> Reply:
    size = len(body) if length == -1 else length
    return asyncio.run(exchange(server, request_head(server, content_type, size), [body]))


def test_invalid_utf8_in_a_form_is_named_with_422(server: Server) -> None:
    before = head(server)
    assert send(server, "application/x-www-form-urlencoded", b"message=%FF%FEhi&" + FORM).status == 422
    assert send(server, "application/x-www-form-urlencoded", b"message=\xff\xfehi&" + FORM).status == 422
    assert send(server, "application/json", b'{"message": "\xff\xfe"}').status == 400
    assert head(server) == before


def test_ten_megabyte_body_gets_413(server: Server) -> None:
    before = head(server)
    big = b"message=" + b"a" * (10 * 1024 * 1024)
    # Announced: refused before a byte of the body is read.
    honest = asyncio.run(exchange(server, request_head(server, "application/x-www-form-urlencoded", len(big)), []))
    assert honest.status == 413
    # Chunked, with no length to judge by: counted on the stream and cut at the limit.
    chunks = [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (big[i:i + 65536] for i in range(0, len(big), 65536))]
    streamed = asyncio.run(exchange(server, request_head(server, "application/x-www-form-urlencoded", None), chunks))
    assert streamed.status in (413, None)
    assert head(server) == before


def test_ten_thousand_fields_are_refused(server: Server) -> None:
    before = head(server)
    form = b"&".join(b"f%x=" % i for i in range(10_000)) + b"&message=hi&" + FORM
    assert send(server, "application/x-www-form-urlencoded", form).status in (400, 413)
    boundary = "b0undary"
    parts = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n\r\n'.encode()
                     for i in range(10_000)) + f"--{boundary}--\r\n".encode()
    assert send(server, f"multipart/form-data; boundary={boundary}", parts).status in (400, 413)
    assert head(server) == before


def test_deeply_nested_json_gets_400(server: Server) -> None:
    before = head(server)
    deep = b'{"message": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    assert send(server, "application/json", deep).status == 400
    assert send(server, "application/json", b"[" * 60_000).status == 400
    assert head(server) == before


def test_nul_bytes_are_named_with_422(server: Server) -> None:
    before = head(server)
    body = json.dumps(submission("before\u0000after")).encode()
    assert send(server, "application/json", body).status == 422
    assert send(server, "application/x-www-form-urlencoded", b"message=a%00b&" + FORM).status == 422
    assert send(server, "application/x-www-form-urlencoded", b"message=a\0b&" + FORM).status == 422
    assert head(server) == before


def test_content_length_shorter_than_the_body_stores_nothing(server: Server) -> None:
    before = head(server)
    body = json.dumps(submission("a lie about the length")).encode()
    reply = send(server, "application/json", body, length=len(body) // 2)
    assert reply.status == 400
    assert head(server) == before


def test_content_length_longer_than_the_body_is_cut_off(server: Server) -> None:
    before = head(server)
    body = json.dumps(submission("the rest never comes")).encode()
    reply = send(server, "application/json", body, length=len(body) + 500)
    assert reply.status in (408, None)
    assert head(server) == before


def test_trickling_clients_are_cut_off_while_others_are_served(server: Server) -> None:
    before = head(server)
    body = b"message=" + b"x" * 400 + b"&" + FORM

    async def run() -> tuple[list[Reply], list[float]]:
        hdr = request_head(server, "application/x-www-form-urlencoded", len(body))
        trickles = [asyncio.create_task(exchange(server, hdr, [bytes([b]) for b in body], delay=0.1))
                    for _ in range(20)]
        served: list[float] = []
        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.sleep(1.0)  # every trickler is connected and sending
            while not all(t.done() for t in trickles) and len(served) < 40:
                started = time.monotonic()
                r = await client.post(server.url + "/api/feedback", json=submission(f"served {len(served)}"))
                assert r.status_code == 201, r.text
                served.append(time.monotonic() - started)
                await asyncio.sleep(0.5)
        return list(await asyncio.gather(*trickles)), served

    replies, served = asyncio.run(run())
    record("trickle", {"tricklers": len(replies), "answers": sorted({str(r.status) for r in replies}),
                       "cut_off_after_s": round(max(r.seconds for r in replies), 1),
                       "served_meanwhile": len(served), "served_slowest_s": round(max(served), 3)})
    assert all(r.status in (408, None) for r in replies), replies
    assert served and max(served) < 2.0, served
    assert head(server) == before + len(served)
