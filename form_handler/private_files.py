"""The ledger's files are readable by their owner only: they hold e-mail addresses and messages.

SQLite creates the `-wal`, `-shm` and `-journal` files beside a database with the database file's own
permissions, so creating the database file 0600 before SQLite opens it is enough for every file it
makes later, whatever the process umask. Files left by older versions (created 0644) are narrowed
when the ledger is next opened for writing.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("form_handler")

# The files SQLite keeps beside a database (WAL mode, rollback journal) and our writers' lock file.
SIDECARS = ("-wal", "-shm", "-journal", ".writer-lock")


def ensure_private(path: Path) -> None:
    """Create the database file 0600 (its folder 0700) if missing; narrow it and its sidecars if too open."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)  # an empty file is an empty SQLite database
    for name in (path, *(path.with_name(path.name + s) for s in SIDECARS)):
        narrow(name)


def narrow(path: Path) -> None:
    """Drop group and other permissions from one existing file; missing files are fine."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
    except FileNotFoundError:
        pass
    except OSError as e:  # e.g. a read-only volume: the ledger still opens (and answers 503 for writes)
        log.warning("%s is readable by others and cannot be narrowed (%s); run chmod 600 on it.", path, e.strerror)
