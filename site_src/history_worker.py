"""The history worker: a second Python process that builds the change history while MkDocs renders the site.

MkDocs renders pages on one core; the history (git, timelines, redlines, past versions: seconds of CPU on a
large site) runs on another. The plugin starts the worker in on_config (`git log` begins at once), streams it
the site's settings and each policy page as MkDocs reads them (pickles over a pipe), and reads two answers from
another pipe: the status lines in on_env, the Outcome in on_post_build. On Linux the worker is a fork of the
MkDocs process, so it starts with everything imported; elsewhere it is a fresh Python that imports only the pure
core, never MkDocs. Either way it runs only the core. If the plugin goes away, the worker reads end-of-file and
exits.

    python -m site_src.history_worker REPO_ROOT [DOCS_DIR]     # what HistoryWorker runs without fork; not for people
"""

from __future__ import annotations

import fcntl
import gc
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

# Nothing of the core at module level: the worker starts `git log` before it imports the rest (history_job alone
# pulls in YAML, difflib and more: ~0.1 s of a worker that is on the build's critical path).
if TYPE_CHECKING:
    from .history_job import Finish, Outcome, PolicySource, ShellSource, SiteInfo, Statuses

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
# Fork where that is safe and cheap: the worker then starts at once, with MkDocs and most of the core imported (a fresh
# Python needs ~0.15 s of imports before it can read a message: a tenth of a small site's build). Elsewhere
# (macOS, where forking a process that may hold system frameworks is unsafe; Windows), a fresh Python.
FORK = hasattr(os, "fork") and sys.platform.startswith("linux")


def _fork_is_safe() -> bool:
    # Only from a process with no other thread: a lock another thread holds at the fork stays held in the child.
    # `mkdocs build` has none; `mkdocs serve` rebuilds from its server's thread, so its rebuilds start a fresh Python.
    return FORK and threading.active_count() == 1


class HistoryWorker:
    """The plugin's handle on the worker process: messages go in through one pipe, answers come out of another."""

    def __init__(self, repo_root: Path, docs_dir: str | None = None, *, fork: bool | None = None) -> None:
        root = Path(repo_root).resolve()
        docs = Path(docs_dir).resolve() if docs_dir else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        if _fork_is_safe() if fork is None else fork:
            self._pid, self._to, self._from = _fork(root, docs)
        else:
            # The worker must import this very package: `-m` puts the working directory first on sys.path, so run
            # it from the package's parent (a site's own checkout may hold another copy of site_src).
            args = [sys.executable, "-m", "site_src.history_worker", str(root), *([str(docs)] if docs else [])]
            self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_PACKAGE_PARENT)
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._to, self._from = self._proc.stdin, self._proc.stdout
        self._broken = False
        self._statuses: Statuses | None = None
        self._exit_status: int | None = None
        self._done = False  # the Outcome came: the worker exits by itself
        self._shell_sent = False
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            try:  # room for every message of a large site, so the plugin never waits for the worker to read
                fcntl.fcntl(self._to, fcntl.F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass

    def send(self, message: SiteInfo | PolicySource | Finish | ShellSource, *, flush: bool = True) -> None:
        """Queue a message for the worker (it reads continuously, so this does not wait for its work). With
        ``flush=False`` it may wait in the buffer for the next messages: one write, and one wake-up of the worker,
        for several pages instead of one each (the next message sent with a flush, or close, sends it)."""
        if self._broken or self._to.closed:
            return
        try:
            pickle.dump(message, self._to, protocol=pickle.HIGHEST_PROTOCOL)
            if flush:
                self._to.flush()
        except (BrokenPipeError, OSError):
            self._broken = True  # the worker died; result() reports how

    def statuses(self) -> Statuses:
        """Wait for the worker's first answer to Finish: every policy page's status line (it comes as soon as the
        timelines are known, long before the pages are written)."""
        if self._statuses is None:
            from .history_job import Statuses

            answer = self._answer()
            self._statuses = answer if isinstance(answer, Statuses) else Statuses(history=False)
        return self._statuses

    def send_shell(self, shell: ShellSource) -> None:
        """Send the page whose shell the history pages take, the last message: the worker now writes its pages."""
        if self._shell_sent:
            return
        self._shell_sent = True
        self.send(shell)
        self._close_input()

    def result(self) -> Outcome:
        """Wait for the worker to write the pages and return what it found (send_shell first)."""
        from .history_job import Outcome, ShellSource

        self.statuses()
        self.send_shell(ShellSource(None, error="the generator rendered no 404 page to take the history pages' shell from."))
        outcome = self._answer()
        if isinstance(outcome, Outcome):
            self._done = True
            return outcome
        status = self._wait()
        return Outcome(error=f"the change history worker stopped with exit status {status}; its error is above.")

    def _answer(self) -> object:
        """The worker's next answer; None when it stopped without one."""
        try:
            return pickle.load(self._from)  # noqa: S301 - our own child process, over a private pipe
        except (EOFError, OSError, ValueError, pickle.UnpicklingError):  # ValueError: the pipe is closed already
            return None

    def _close_input(self) -> None:
        if not self._to.closed:
            try:
                self._to.close()
            except OSError:
                pass

    def _wait(self, kill: bool = False) -> int:
        """Reap the worker (killed first with ``kill``) and return its exit status."""
        if self._exit_status is None:
            if self._proc is not None:
                if kill and self._proc.poll() is None:
                    self._proc.kill()
                self._exit_status = self._proc.wait()
            elif self._pid is not None:
                if kill:
                    try:
                        os.kill(self._pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self._exit_status = os.waitstatus_to_exitcode(os.waitpid(self._pid, 0)[1])
        return self._exit_status if self._exit_status is not None else 0

    def close(self) -> None:
        """Reap the worker, which exits on its own once it has answered; stop it first if it has not (a failed build)."""
        self._close_input()
        self._wait(kill=not self._done)
        self._from.close()


def _fork(root: Path, docs: Path | None) -> tuple[int, IO[bytes], IO[bytes]]:
    """Fork the worker: (its pid, the pipe to it, the pipe from it). The child runs serve() and never returns."""
    from_plugin, to_worker = os.pipe()
    from_worker, to_plugin = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            os.close(to_worker)
            os.close(from_worker)
            _ignore_interrupts()
            # The child's collector need not walk the parent's objects (it would copy their memory pages to do so).
            gc.freeze()
            code = serve(root, os.fdopen(from_plugin, "rb"), os.fdopen(to_plugin, "wb"), docs)
        except BrokenPipeError:
            pass  # MkDocs went away (Ctrl-C, a failed build): nobody to answer
        except BaseException:  # noqa: BLE001 - the child must never return into MkDocs
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)  # no atexit handlers, no flushing of buffers the parent owns
    os.close(from_plugin)
    os.close(to_plugin)
    return pid, os.fdopen(to_worker, "wb"), os.fdopen(from_worker, "rb")


def _read_messages(stream: IO[bytes], inbox: queue.Queue[Any]) -> None:
    # Reading in a thread keeps the plugin's pipe drained while the main thread works.
    # It stops after Finish: a thread still blocked on stdin would stall the interpreter's shutdown.
    from .history_job import ShellSource

    try:
        while True:
            message = pickle.load(stream)  # noqa: S301 - our parent process, over a private pipe
            inbox.put(message)
            if isinstance(message, ShellSource):
                return
    except BaseException:  # noqa: BLE001 - end of input, or a message this worker cannot read: stop, never hang
        inbox.put(None)
        if not isinstance(sys.exc_info()[1], EOFError):
            traceback.print_exc()


def serve(repo_root: Path, stdin: IO[bytes], stdout: IO[bytes], docs_dir: Path | None = None) -> int:
    """The worker's loop: read messages until Finish, answer the status lines, then write one pickled Outcome.

    A policy's timeline is worked out as soon as its message comes (the plugin waits for every status line
    after Finish); the heavy part of its pages is done only while no message waits, and before its message
    comes when the worker has nothing else to do (HistorySite.guess)."""
    from .history import HistoryReader, HistoryUnavailable

    # git first: `git log` and `git cat-file` run while the rest is imported and MkDocs lists the pages. The pipe
    # from the plugin (1 MB) can wait that long.
    startup_error: str | None = None
    try:
        reader = HistoryReader(repo_root)
        if docs_dir is not None:  # the pages are in there: read their history before MkDocs has listed them
            reader.request(_markdown_files(docs_dir))
    except HistoryUnavailable as exc:
        startup_error = str(exc)
    inbox: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=_read_messages, args=(stdin, inbox), daemon=True).start()
    from .history_job import Finish, Outcome, PolicySource, ShellSource, SiteInfo, Statuses
    from .history_pages import HistorySite

    error = None if startup_error is None else Outcome(error=startup_error, history_unavailable=True)
    answered = False  # the Statuses went out: the next answer is the Outcome
    finish: Finish | None = None

    site: HistorySite | None = None
    while True:
        message: Any = _NOTHING
        try:
            try:
                message = inbox.get_nowait()
            except queue.Empty:
                if site is not None and error is None and (site.prepare() or site.guess()):
                    continue  # one policy's pages prepared (or guessed); see whether a message came meanwhile
                message = inbox.get()
            if message is None:
                return 1  # the plugin went away mid-build
            if error is not None and not isinstance(message, (Finish, ShellSource)):
                continue  # keep reading so that the plugin never blocks on a full pipe
            if isinstance(message, SiteInfo):
                missing = [Path(p) for p in message.history_paths if Path(p) not in reader.requested]
                if missing or not reader.requested:
                    reader.request(missing)
                site = HistorySite(message, reader.result)
            elif isinstance(message, PolicySource):
                assert site is not None, "SiteInfo comes first"
                site.add(message)
            elif isinstance(message, Finish):
                finish = message
                statuses = site.statuses() if site is not None and error is None else Statuses(history=False)
                _send(stdout, statuses)
                answered = True
            elif isinstance(message, ShellSource):
                if finish is None:
                    raise RuntimeError("the page shell came before Finish")
                _send(stdout, error or (site.finish(finish, message) if site is not None else Outcome()))
                return 0
        except HistoryUnavailable as exc:
            error = Outcome(error=str(exc), history_unavailable=True)
        except Exception as exc:  # noqa: BLE001 - reported to the plugin, which fails the build with it
            traceback.print_exc()
            error = Outcome(error=f"the change history could not be built ({type(exc).__name__}: {exc}).")
        if isinstance(message, Finish) and not answered:  # the error came on the way to the answers
            _send(stdout, Statuses(history=False))
            answered = True
        if isinstance(message, ShellSource):  # the plugin still expects the Outcome
            if not answered:
                _send(stdout, Statuses(history=False))
            _send(stdout, error or Outcome(error="the change history worker stopped without an answer."))
            return 0


_NOTHING = object()


def _markdown_files(docs_dir: Path) -> list[Path]:
    """Every Markdown file under docs_dir: a superset of the pages MkDocs will list (it may exclude some)."""
    from .policy_pages import MARKDOWN_SUFFIXES

    return [
        Path(folder, name)
        for folder, _, names in os.walk(docs_dir)
        for name in names
        if name.endswith(MARKDOWN_SUFFIXES)
    ]


def _send(stdout: IO[bytes], message: Statuses | Outcome) -> None:
    """One answer to the plugin, pickled."""
    pickle.dump(message, stdout, protocol=pickle.HIGHEST_PROTOCOL)
    stdout.flush()


def _ignore_interrupts() -> None:
    # Ctrl-C in a terminal reaches the whole process group: let MkDocs stop, and the worker follow when its pipe
    # closes, without a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def main() -> int:
    _ignore_interrupts()
    # Anything a library prints must not corrupt the pickle on stdout: keep the real stdout aside.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        return serve(Path(sys.argv[1]), sys.stdin.buffer, out, Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    except BrokenPipeError:
        return 1  # MkDocs went away (Ctrl-C, a failed build): nobody to answer


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # the answers are out: skip tearing down the interpreter (~0.1 s the plugin would wait for)
