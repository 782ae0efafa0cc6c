"""The site's own page shell for the service's pages: receipt, manage, withdrawn, erased, errors, e-mail links.

Every build writes SITE_DIR/policy-shell.html (site_src/shell.py): a page exactly as the generator rendered
it (header, navigation, footer, stylesheets, the change banner while a change is active), with its <title>
text replaced by TITLE_MARKER and its content area by CONTENT_MARKER, each once, and every relative URL
made absolute from the site root. The service fills it. It is read again when the file changes (one stat
per page), so a new build shows up without a restart; while the file is absent or not a shell, the pages
fall back to the service's own base.html.

The shell runs Material's scripts. The service's policy stays strict: scripts only from this origin plus
the exact inline scripts of this shell, allowed by their sha256 (computed when the shell is read), never
'unsafe-inline' for scripts. So a script in anything the service prints (escaped anyway) could not run.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from markupsafe import escape
from starlette.types import ASGIApp, Receive, Scope, Send

from form_handler.web.origins import normalise

log = logging.getLogger("form_handler.web.site_shell")

TITLE_MARKER = "<!--policy-site:title-->"
CONTENT_MARKER = "<!--policy-site:content-->"
SHELL_NAME = "policy-shell.html"
MAX_BYTES = 2 * 1024 * 1024
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\ssrc=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)
_SOURCE = re.compile(r"https?://[a-z0-9.-]+(:[0-9]+)?")


@dataclass(frozen=True)
class Shell:
    """A parsed shell: the text around its two markers, and the CSP its pages are served with."""

    head: str  # up to the title marker
    middle: str  # between the title and the content markers
    tail: str  # after the content marker
    csp: str

    def fill(self, title: str, content: str) -> str:
        """The page: `title` is text (escaped here), `content` HTML already rendered and escaped by Jinja."""
        return f"{self.head}{escape(title)}{self.middle}{content}{self.tail}"


def parse(text: str, form_origins: Iterable[str]) -> Shell | None:
    """The shell, or None when `text` does not hold each marker exactly once in the right order."""
    if text.count(TITLE_MARKER) != 1 or text.count(CONTENT_MARKER) != 1:
        return None
    head, _, rest = text.partition(TITLE_MARKER)
    middle, _, tail = rest.partition(CONTENT_MARKER)
    if not middle or CONTENT_MARKER in head:
        return None
    return Shell(head, middle, tail, shell_csp(text, form_origins))


def shell_csp(text: str, form_origins: Iterable[str]) -> str:
    """The service's policy with scripts from this origin and the shell's own inline scripts (by hash)."""
    scripts = _hashes(_INLINE_SCRIPT, text)
    targets = ["'self'", *dict.fromkeys(o for o in map(normalise, form_origins) if _SOURCE.fullmatch(o))]
    # Styles as on the built site's own pages: the theme's scripts insert inline styles at run time (Zensical's
    # does), which no hash computed from the file can foresee. A style cannot run code; scripts stay hashed.
    return (f"default-src 'self'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            f"object-src 'none'; base-uri 'self'; form-action {' '.join(targets)}; frame-ancestors 'self'")


def _hashes(element: re.Pattern[str], text: str) -> str:
    # " 'sha256-...'" for each distinct inline element body, as the browser hashes it (UTF-8 of the text inside).
    found = dict.fromkeys(base64.b64encode(hashlib.sha256(m.group(1).encode()).digest()).decode()
                          for m in element.finditer(text))
    return "".join(f" 'sha256-{h}'" for h in found)


class SiteShell:
    """SITE_DIR/policy-shell.html, re-read when its size or modification time changes."""

    def __init__(self, site_dir: Path | None, form_origins: Iterable[str]) -> None:
        self.path = None if site_dir is None else Path(site_dir) / SHELL_NAME
        self.form_origins = tuple(form_origins)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._shell: Shell | None = None
        self.reads = 0  # how many times the file was read; tests check that it is re-read only when it changes

    def current(self) -> Shell | None:
        """The shell as the file is now, or None (absent, unreadable or without its markers: base.html then)."""
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            self._stamp, self._shell = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return self._shell
        with self._lock:
            if stamp != self._stamp:
                self._shell = self._read()
                self._stamp = stamp
        return self._shell

    def _read(self) -> Shell | None:
        self.reads += 1
        try:
            with open(self.path, "rb") as f:  # type: ignore[arg-type]  # current() checked it is set
                data = f.read(MAX_BYTES + 1)
            shell = None if len(data) > MAX_BYTES else parse(data.decode("utf-8"), self.form_origins)
        except (OSError, UnicodeDecodeError):
            shell = None
        if shell is None:
            log.warning("%s is not a page shell with each marker once; the service's pages use their own look.",
                        self.path)
        return shell


# The shell of the app handling the current request (set by ShellMiddleware; None outside a request).
_CURRENT: ContextVar[SiteShell | None] = ContextVar("policy_site_shell", default=None)


def current() -> Shell | None:
    """The shell for the page being rendered now, if the app has one."""
    site = _CURRENT.get()
    return site.current() if site is not None else None


class ShellMiddleware:
    """Makes the app's SiteShell the one pages.py renders into for every request it handles."""

    def __init__(self, app: ASGIApp, *, shell: SiteShell) -> None:
        self.app = app
        self.shell = shell

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _CURRENT.set(self.shell)
        try:
            await self.app(scope, receive, send)
        finally:
            _CURRENT.reset(token)
