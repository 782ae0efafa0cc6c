"""The history worker: a second Python process that builds the change history while MkDocs renders the site.

MkDocs renders pages on one core; the history (git, timelines, redlines, past versions: seconds of CPU on a
large site) runs on another. The plugin starts the worker in on_config (`git log` begins at once), streams it
the site's settings and each policy page as MkDocs reads them (pickles over the worker's stdin), and collects
one Outcome from its stdout in on_post_build. The worker imports only the pure core, never MkDocs, so it starts
in a fraction of a second. If the plugin goes away, the worker reads end-of-file and exits.

    python -m site_src.history_worker REPO_ROOT     # what HistoryWorker runs; not for people
"""

from __future__ import annotations

import fcntl
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any

from .history_job import Finish, Outcome, PolicySource, SiteInfo

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


class HistoryWorker:
    """The plugin's handle on the worker process."""

    def __init__(self, repo_root: Path) -> None:
        # The worker must import this very package: `-m` puts the working directory first on sys.path, so run
        # it from the package's parent (a site's own checkout may hold another copy of site_src).
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "site_src.history_worker", str(Path(repo_root).resolve())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_PACKAGE_PARENT,
        )
        self._broken = False
        if hasattr(fcntl, "F_SETPIPE_SZ") and self._proc.stdin is not None:
            try:  # room for every message of a large site, so the plugin never waits for the worker to read
                fcntl.fcntl(self._proc.stdin, fcntl.F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass

    def send(self, message: SiteInfo | PolicySource | Finish) -> None:
        """Queue a message for the worker (it reads continuously, so this does not wait for its work)."""
        if self._broken or self._proc.stdin is None:
            return
        try:
            pickle.dump(message, self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._broken = True  # the worker died; result() reports how

    def result(self) -> Outcome:
        """Wait for the worker to write the pages and return what it found."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        assert self._proc.stdout is not None
        data = self._proc.stdout.read()
        status = self._proc.wait()
        if status != 0 or not data:
            return Outcome(error=f"the change history worker stopped with exit status {status}; its error is above.")
        outcome: Outcome = pickle.loads(data)  # noqa: S301 - our own child process, over a private pipe
        return outcome

    def close(self) -> None:
        """Stop the worker if it is still running (a failed build)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()


def _read_messages(stream: IO[bytes], inbox: queue.Queue[Any]) -> None:
    # Reading in a thread keeps the plugin's pipe drained while the main thread works.
    # It stops after Finish: a thread still blocked on stdin would stall the interpreter's shutdown.
    try:
        while True:
            message = pickle.load(stream)  # noqa: S301 - our parent process, over a private pipe
            inbox.put(message)
            if isinstance(message, Finish):
                return
    except BaseException:  # noqa: BLE001 - end of input, or a message this worker cannot read: stop, never hang
        inbox.put(None)
        if not isinstance(sys.exc_info()[1], EOFError):
            traceback.print_exc()


def serve(repo_root: Path, stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """The worker's loop: read messages until Finish, then write one pickled Outcome."""
    from .history import HistoryReader, HistoryUnavailable  # after the pipe thread starts: imports take time
    from .history_pages import HistorySite

    inbox: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=_read_messages, args=(stdin, inbox), daemon=True).start()
    error: Outcome | None = None
    site: HistorySite | None = None
    try:
        reader = HistoryReader(repo_root)
    except HistoryUnavailable as exc:
        error = Outcome(error=str(exc), history_unavailable=True)
    while True:
        message = inbox.get()
        if message is None:
            return 1  # the plugin went away mid-build
        if error is not None and not isinstance(message, Finish):
            continue  # keep reading so that the plugin never blocks on a full pipe
        try:
            if isinstance(message, SiteInfo):
                reader.request([Path(p) for p in message.history_paths])
                site = HistorySite(message, reader.result)
            elif isinstance(message, PolicySource):
                assert site is not None, "SiteInfo comes first"
                site.add(message)
            elif isinstance(message, Finish):
                outcome = error or (site.finish(message) if site is not None else Outcome())
                pickle.dump(outcome, stdout, protocol=pickle.HIGHEST_PROTOCOL)
                stdout.flush()
                return 0
        except HistoryUnavailable as exc:
            error = Outcome(error=str(exc), history_unavailable=True)
        except Exception as exc:  # noqa: BLE001 - reported to the plugin, which fails the build with it
            traceback.print_exc()
            error = Outcome(error=f"the change history could not be built ({type(exc).__name__}: {exc}).")


def main() -> int:
    # Anything a library prints must not corrupt the pickle on stdout: keep the real stdout aside.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return serve(Path(sys.argv[1]), sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
