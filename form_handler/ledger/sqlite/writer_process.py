"""The ledger writer in a process of its own: the service's event loop sends operations as data and awaits answers.

Why a process: in one process apsw releases the GIL around every SQLite call, so a writer thread and the event
loop handed the GIL back and forth several times per submission, and the loop spent two to three times a bare
endpoint's CPU per request (bench/README.md, "What limits it now"). Here the loop only pickles the operation,
writes it to a socket and later reads the answer; a child process runs GroupCommitWriter.run_batch (one
transaction, a SAVEPOINT per operation) on everything that arrived while it committed the batch before.

An operation is a picklable callable of the write transaction: a functools.partial of a module-level function,
or an operator.methodcaller. What is kept from the writer thread:
- an answer is sent only after the COMMIT holding its operation returned (acknowledged means durable);
- a refusal undoes only its own operation and reaches the caller as the same exception;
- a child that dies fails every operation it held with LedgerOutcomeUnknown (503, never acknowledged; the
  answer says it may have been recorded, since a child can die after a COMMIT and before its answers, as a
  whole service could before), and the next submission after RESPAWN_PAUSE starts a new child;
- several service processes each have a child, and the children take turns through the peer flock beside the
  ledger (writer.py), as the writer threads did.

Wire: frames of a 4-byte big-endian length and a body. Service to child: an 8-byte operation id and the pickled
operation. Child to service: first ("ready", None) or ("error", exception), then one frame per batch holding,
for each operation, its id, a length and its own pickled (ok, value), so an answer that cannot be read fails
only its caller. The socket is a socketpair private to the two processes, so unpickling what comes through it
trusts nobody else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import importlib
import itertools
import logging
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from form_handler.ledger.sqlite.children import start_python
from form_handler.ledger.types import LedgerError, LedgerOutcomeUnknown, LedgerUnavailable

log = logging.getLogger("form_handler")
T = TypeVar("T")

_LENGTH = struct.Struct(">I")
_REQUEST = struct.Struct(">IQ")  # frame length, then the operation's id
_ANSWER = struct.Struct(">QI")  # in an answer frame: the operation's id, then the length of its pickled answer
_CHILD = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          "from form_handler.ledger.sqlite.writer_process import serve; serve()")
# After a child died, a new one is started at most this often (a ledger that cannot even be opened would
# otherwise cost a process start per request).
RESPAWN_PAUSE = 1.0
# The module whose imports bring in every function the service sends as an operation (its routes).
OPERATIONS_FROM = "form_handler.web.app"
STOPPED = ("the ledger writer process stopped before it answered; this operation may or may not have been "
           "recorded (it is recorded if its batch committed before the process stopped).")


class ProcessWriter:
    """The service's side: submit(op) from the event loop; start() and close() from a worker thread."""

    def __init__(self, ledger_path: str | Path, *, max_batch: int = 512, start_timeout: float = 60.0) -> None:
        self.ledger_path = Path(ledger_path)
        self.max_batch = max_batch
        self.start_timeout = start_timeout
        self.spawns = 0  # children started, for tests
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None  # the service's end of the child's socket, until a loop takes it
        self._connected: socket.socket | None = None  # the same socket, once the loop's transport has it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._idle: asyncio.Event | None = None  # set whenever nothing is pending (on the loop)
        self._outbox: list[bytes] = []  # requests not yet written to the socket
        self._ids = itertools.count(1)
        self._closed = False
        self._closing = False  # the transport is being closed on purpose
        self._died_at = 0.0
        self._lock: asyncio.Lock | None = None
        self._procs = threading.Lock()  # _proc and _sock change from worker threads (start, close, respawn)

    @property
    def pid(self) -> int | None:
        """The child's process id (tests kill it)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def start(self) -> None:
        """Start the child and wait until it has opened the ledger; what stopped it is raised here."""
        self._spawn()

    async def submit(self, op: Callable[[Any], T]) -> T:
        """Run op(txn) in the child's next batch; return (or raise) once that batch is committed."""
        if self._closed:
            raise LedgerUnavailable("the ledger writer is not running (shutting down or not started).")
        try:
            data = pickle.dumps(op, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            raise TypeError(f"a ledger operation must be picklable to reach the writer process (a functools.partial "
                            f"of a module-level function, not a lambda): {e}") from e
        if self._transport is None or self._loop is not asyncio.get_running_loop():
            await self._connect()
        if self._closed or self._transport is None:  # closed (or the child lost) while this one connected
            raise LedgerUnavailable("the ledger writer is not running (shutting down or not started).")
        assert self._loop is not None and self._idle is not None
        op_id = next(self._ids)
        future: asyncio.Future[T] = self._loop.create_future()
        self._pending[op_id] = future
        self._idle.clear()
        # Sent once per turn of the loop with what other requests added meanwhile: one write, not one each.
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(_REQUEST.pack(len(data) + 8, op_id) + data)
        return await future

    def close(self) -> None:
        """Stop taking work, wait for every answer owed, then let the child commit and exit.

        Meant for a worker thread while the loop runs (the lifespan's run_in_threadpool); on the loop's own
        thread it cannot wait for answers, so it only ends the connection and reaps the child in the background
        (use aclose() there)."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if loop is not None and self._transport is not None:
            if not loop.is_running():  # ended (asyncio.run in tests) or stopped: nothing will answer there
                self._drop_connection()
            elif _running_loop() is loop:
                self._end_transport()
                threading.Thread(target=self._reap, args=(60,), name="ledger-writer-reaper", daemon=True).start()
                return
            else:
                try:
                    asyncio.run_coroutine_threadsafe(self._drain(), loop).result(timeout=120)
                except (RuntimeError, concurrent.futures.TimeoutError):
                    try:
                        loop.call_soon_threadsafe(self._end_transport)
                    except RuntimeError:  # the loop closed meanwhile
                        self._drop_connection()
        self._reap(wait=60)

    async def aclose(self) -> None:
        """close() on the loop: drain, end the connection, wait for the child without blocking the loop."""
        if self._closed:
            return
        self._closed = True
        if self._transport is not None and self._loop is asyncio.get_running_loop():
            await self._drain()
        await asyncio.to_thread(self._reap, 60)

    # -- the service's side, internals

    def _spawn(self) -> None:
        with self._procs:
            self._reap_locked(wait=5)
            if self._closed:
                raise LedgerUnavailable("the ledger writer is not running (shutting down or not started).")
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                # In the service's process group, so a SIGKILL of the group ends it too; SIGINT and SIGTERM it
                # ignores (_CHILD): it ends when the service closes its socket, or dies, which closes it too.
                proc = start_python(_CHILD, str(theirs.fileno()), str(self.ledger_path), str(self.max_batch),
                                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
            except OSError as e:
                ours.close()
                raise LedgerUnavailable(f"cannot start the ledger writer process ({e}).") from e
            finally:
                theirs.close()
            self.spawns += 1
            try:
                ours.settimeout(self.start_timeout)
                status, detail = pickle.loads(_read_frame(ours))
                if status != "ready":
                    proc.wait(timeout=30)
            except Exception as e:
                ours.close()
                proc.kill()
                proc.wait()
                raise LedgerUnavailable(f"the ledger writer process did not start (exit code {proc.returncode}, {e}).") from e
            if status != "ready":
                ours.close()
                raise detail if isinstance(detail, BaseException) else LedgerError(str(detail))
            ours.setblocking(False)
            self._proc, self._sock = proc, ours

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._transport is not None and self._loop is not None and self._loop.is_running():
                raise RuntimeError("a ProcessWriter serves the event loop it first ran on, and that loop still runs.")
            if self._transport is not None:  # that loop has ended (asyncio.run in tests): a child for this one
                self._drop_connection()  # the old child sees the end of its socket; _spawn() reaps it
                self._died_at = 0.0  # not a crash: no pause before the next child
            # Set before any await, so concurrent first submissions on this loop share the lock.
            self._loop, self._lock, self._idle = loop, asyncio.Lock(), asyncio.Event()
            self._idle.set()
        assert self._lock is not None
        async with self._lock:
            if self._transport is not None or self._closed:
                return
            if self._sock is None:  # the child died (or was never started): a new one, not too often
                if time.monotonic() - self._died_at < RESPAWN_PAUSE:
                    raise LedgerUnavailable(STOPPED)
                await asyncio.to_thread(self._spawn)
            with self._procs:
                sock, self._sock = self._sock, None
            if sock is None:  # close() reaped it meanwhile
                return
            self._closing = False
            transport, _ = await loop.create_unix_connection(lambda: _Answers(self), sock=sock)
            self._transport, self._connected = transport, sock
            if self._closed:  # close() ran while this connected: nobody will drain this connection
                self._end_transport()

    def _drop_connection(self) -> None:
        # The transport's loop is not running, so the transport cannot close itself: close its socket (the same
        # object, so the transport's own close later does nothing), which ends the child.
        if self._connected is not None:
            self._connected.close()
        self._transport = self._connected = None
        self._pending.clear()  # their loop is gone; nobody can await them
        self._outbox.clear()

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if self._transport is not None:
            self._transport.write(b"".join(frames))
        # else the connection was lost meanwhile, and _lost() already failed these operations

    def _answered(self, op_id: int, answer: bytes) -> None:
        """Settle one caller from its own pickled answer; an answer that cannot be read fails that caller only."""
        future = self._pending.pop(op_id, None)
        if future is not None and not future.done():  # a caller that gave up (cancelled) is simply skipped
            try:
                ok, value = pickle.loads(answer)
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            except Exception as e:
                log.error("the ledger writer's answer could not be read: %s", e)
                future.set_exception(LedgerError(f"the ledger operation ran, but its answer could not be read ({e})."))
        if not self._pending and self._idle is not None:
            self._idle.set()

    def _lost(self, exc: Exception | None) -> None:
        self._transport = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(LedgerOutcomeUnknown(STOPPED))
        if self._idle is not None:
            self._idle.set()
        if not self._closing:
            self._died_at = time.monotonic()
            log.error("the ledger writer process stopped (%s); the next write starts a new one", exc or "end of file")
            proc = self._proc
            if proc is not None:  # reap it now rather than leave a zombie until the next write
                threading.Thread(target=proc.wait, name="ledger-writer-reaper", daemon=True).start()

    async def _drain(self) -> None:
        assert self._idle is not None
        while self._pending:  # answers owed, cancelled callers' included (their work is in the child)
            await self._idle.wait()
        self._end_transport()

    def _end_transport(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()  # sends what is buffered, then EOF: the child commits and exits

    def _reap(self, wait: float) -> None:
        with self._procs:
            self._reap_locked(wait)

    def _reap_locked(self, wait: float) -> None:
        proc, self._proc = self._proc, None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if proc is None:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            log.error("the ledger writer process did not stop within %.0f s; killing it", wait)
            proc.kill()
            proc.wait()


class _Answers(asyncio.Protocol):
    """Reads the child's answer frames on the event loop and settles each caller's future."""

    def __init__(self, writer: ProcessWriter) -> None:
        self.writer = writer
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        # A frame is one batch: 8-byte operation ids each followed by a length and that caller's pickled answer.
        buf = self.buffer
        buf += data
        start = 0
        while len(buf) - start >= 4:
            (n,) = _LENGTH.unpack_from(buf, start)
            if len(buf) - start - 4 < n:
                break
            at, end = start + 4, start + 4 + n
            while at < end:
                op_id, size = _ANSWER.unpack_from(buf, at)
                self.writer._answered(op_id, bytes(buf[at + _ANSWER.size:at + _ANSWER.size + size]))
                at += _ANSWER.size + size
            start = end
        del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.writer._lost(exc)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _read_frame(sock: socket.socket) -> bytes:
    (n,) = _LENGTH.unpack(_read_exactly(sock, 4))
    return _read_exactly(sock, n)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("the ledger writer process closed its socket")
        data += chunk
    return bytes(data)


# -- the child


class _Requests:
    """The child's reader: blocks for the first request, then takes whatever else has already arrived."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.eof = False

    def take(self, limit: int) -> list[tuple[int, bytes]] | None:
        """Up to `limit` requests; None once the service closed its end and nothing is left."""
        frames = self._parse(limit)
        while not frames and not self.eof:
            self._receive(block=True)
            frames = self._parse(limit)
        if frames and len(frames) < limit and not self.eof:
            self._receive(block=False)
            frames += self._parse(limit - len(frames))
        return frames or None

    def _receive(self, *, block: bool) -> None:
        flags = 0 if block else socket.MSG_DONTWAIT
        while True:
            try:
                chunk = self.sock.recv(1 << 20, flags)
            except BlockingIOError:  # nothing more has arrived
                return
            if not chunk:
                self.eof = True
                return
            self.buffer += chunk
            if block:
                return

    def _parse(self, limit: int) -> list[tuple[int, bytes]]:
        frames: list[tuple[int, bytes]] = []
        buf, start = self.buffer, 0
        while len(frames) < limit and len(buf) - start >= 4:
            (n,) = _LENGTH.unpack_from(buf, start)
            if len(buf) - start - 4 < n:
                break
            _, op_id = _REQUEST.unpack_from(buf, start)
            frames.append((op_id, bytes(buf[start + _REQUEST.size:start + 4 + n])))
            start += 4 + n
        del buf[:start]
        return frames


def _answer(op_id: int, ok: bool, value: Any) -> bytes:
    """One caller's answer, pickled on its own: what cannot travel (or be raised there) becomes a plain error
    for that caller only, and the traceback of a failure that is not a refusal is logged here, where it is."""
    if not ok and not isinstance(value, LedgerError):
        log.error("a ledger operation failed in the writer process", exc_info=value)
        if not isinstance(value, Exception) or isinstance(value, (StopIteration, StopAsyncIteration)):
            value = RuntimeError(f"{type(value).__name__}: {value}")  # a future cannot raise these
    try:
        body = pickle.dumps((ok, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        if ok:  # committed: the caller must not read this as "nothing was stored" (a 500, not a 503)
            value = RuntimeError(f"the ledger operation was recorded, but its result could not be sent back ({e}).")
        else:
            value = RuntimeError(f"{type(value).__name__}: {value}")
        body = pickle.dumps((False, value), protocol=pickle.HIGHEST_PROTOCOL)
    return _ANSWER.pack(op_id, len(body)) + body


def _send(sock: socket.socket, body: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(body)) + body)


def _picklable(value: Any) -> bool:
    try:
        pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        return False
    return True


def _import_operations() -> None:
    try:
        importlib.import_module(OPERATIONS_FROM)
    except Exception as e:  # not fatal: each module is imported anyway when its first operation arrives
        log.warning("the ledger writer could not import %s ahead of time: %s", OPERATIONS_FROM, e)


def serve() -> None:
    """The child: `python -c "...serve()" <socket fd> <ledger path> <max batch>`; runs until its socket ends.

    SIGINT and SIGTERM are ignored (by _CHILD, before any import): a Ctrl+C or a SIGTERM meant for the service
    must not stop a batch halfway. The service drains, then closes the socket, and the child exits after its
    last COMMIT."""
    from form_handler.ledger.sqlite.writer import GroupCommitWriter

    sock = socket.socket(fileno=int(sys.argv[1]))
    max_batch = int(sys.argv[3])
    writer = GroupCommitWriter(sys.argv[2], max_batch=max_batch)
    try:
        writer.open()
    except Exception as e:
        _send(sock, pickle.dumps(("error", e if _picklable(e) else LedgerError(str(e))), protocol=pickle.HIGHEST_PROTOCOL))
        return
    # Unpickling an operation imports the module of its function. The service's routes (and with them every
    # module whose operations they send) are imported before the child says it is ready, so before the service
    # takes requests: a link route's first operation otherwise waited ~0.2 s for the web modules' import, and
    # every submission queued behind it (tests/test_scale.py saw 0.27 s).
    _import_operations()
    # As in the service (web/app.py, freeze_startup_objects): what start-up made lives as long as the process.
    gc.collect()
    gc.freeze()
    _send(sock, pickle.dumps(("ready", None), protocol=pickle.HIGHEST_PROTOCOL))
    requests = _Requests(sock)
    try:
        while (frames := requests.take(max_batch)) is not None:
            if requests.eof:
                # The service hung up: it closes only once every answer it owed was read, or when it died, and
                # then nobody can be told of these. Starting them would record what nobody was answered.
                break
            ids: list[int] = []
            ops: list[Callable[[Any], Any]] = []
            answers: list[bytes] = []
            for op_id, data in frames:
                try:
                    ops.append(pickle.loads(data))
                    ids.append(op_id)
                except Exception as e:
                    answers.append(_answer(op_id, False, LedgerError(f"the ledger writer could not read an operation: {e}")))
            outcomes = writer.run_batch(ops) if ops else []
            answers += [_answer(op_id, ok, value) for op_id, (ok, value) in zip(ids, outcomes)]
            try:
                _send(sock, b"".join(answers))
            except OSError:  # the service is gone; what was committed stays committed
                break
    finally:
        writer.close()
        sock.close()
