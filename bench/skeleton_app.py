"""The bench's floor for a durable write: the bare endpoint's parsing (bench/bare_app.py) plus the least the
deployed design costs, so bench/throughput.py can show where the time of the product's own path goes.

Each uvicorn worker hands the message to a writer process of its own over a private socketpair, started as the
product's SQLite writer is (ledger/sqlite/children.py); the writer takes whatever has arrived, INSERTs it as one
batch, COMMITs with WAL and synchronous=FULL, and only then acknowledges, so every 303 follows an fsync. Writers of
several workers queue around each batch on the product's own flock (writer.py, _PeerLock). Nothing else: no
entry, chain, commitment, statistics, receipt page, host check or security header. Not part of the product.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import subprocess
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import apsw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bench.bare_app import parsed
from form_handler.ledger.sqlite.children import start_python
from form_handler.ledger.sqlite.writer import _PeerLock

_LENGTH = struct.Struct("!I")


def connect(path: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.set_busy_timeout(10_000)  # several uvicorn workers mean several writers
    for sql in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, message TEXT, hash TEXT)"):
        conn.execute(sql).fetchall()  # apsw runs a statement as its rows are read
    return conn


def stored(path: str) -> int:
    """Rows in the skeleton's file, for the bench's check that every acknowledged write is there."""
    (count,) = connect(path).execute("SELECT count(*) FROM messages").fetchall()[0]
    assert isinstance(count, int)
    return count


def write_messages(fd: int, path: str) -> None:
    """The writer process: length-prefixed messages in, one COMMIT per batch, the batch's size back."""
    sock, conn, buffered = socket.socket(fileno=fd), connect(path), b""
    peers = _PeerLock(Path(path + ".writer-lock"))  # SQLite's busy handler alone sleeps up to 100 ms between tries
    while data := sock.recv(1 << 20):
        buffered += data
        batch = []
        while len(buffered) >= 4 and len(buffered) >= 4 + (size := _LENGTH.unpack_from(buffered)[0]):
            batch.append(buffered[4:4 + size])
            buffered = buffered[4 + size:]
        if batch:
            peers.acquire()
            try:
                with conn:  # BEGIN ... COMMIT
                    conn.executemany("INSERT INTO messages (message, hash) VALUES (?, ?)",
                                     [(m.decode(), hashlib.sha256(m).hexdigest()) for m in batch])
            finally:
                peers.release()
            sock.sendall(_LENGTH.pack(len(batch)))


_CHILD = "import sys; from bench.skeleton_app import write_messages; write_messages(int(sys.argv[1]), sys.argv[2])"


class Writer:
    """The service side: send, then wait for the acknowledgement of the batch that held it (answers in order)."""

    async def start(self, path: str) -> None:
        ours, theirs = socket.socketpair()
        # form_handler's parent, first on the child's path, is the bench's root too: bench.skeleton_app imports.
        self.process = start_python(_CHILD, str(theirs.fileno()), path, pass_fds=(theirs.fileno(),),
                                    stdin=subprocess.DEVNULL)
        theirs.close()
        self.reader, self.writer = await asyncio.open_connection(sock=ours)
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.acks = asyncio.create_task(self._acknowledge())

    async def _acknowledge(self) -> None:
        try:
            while True:
                (count,) = _LENGTH.unpack(await self.reader.readexactly(4))
                for _ in range(count):
                    done = self.waiting.popleft()
                    if not done.done():  # its request was cancelled (the client went away)
                        done.set_result(None)
        finally:  # the writer died or the service stops: nobody waits for an answer that cannot come
            for done in self.waiting:
                if not done.done():
                    done.set_exception(RuntimeError("the skeleton's writer process is gone"))

    async def write(self, message: bytes) -> None:
        if self.acks.done():
            raise RuntimeError("the skeleton's writer process is gone")
        done = asyncio.get_running_loop().create_future()
        self.waiting.append(done)
        self.writer.write(_LENGTH.pack(len(message)) + message)
        await done

    async def stop(self) -> None:
        self.acks.cancel()
        self.writer.close()
        await asyncio.to_thread(self.process.wait, 10)


writer = Writer()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await writer.start(os.environ["POLICY_SITE_LEDGER"])
    yield
    await writer.stop()


async def feedback(request: Request) -> Response:
    """Parse and validate like the product, write the message durably, then redirect."""
    draft = await parsed(request)
    if isinstance(draft, Response):
        return draft
    await writer.write(draft.message.encode())
    return RedirectResponse("/feedback/thanks/", status_code=303)


app = Starlette(routes=[Route("/api/feedback", feedback, methods=["POST"])], lifespan=lifespan)
