"""`policy-site preview`: a live preview for writers under either generator.

MkDocs: `mkdocs serve` itself (the plugin runs on every rebuild: banner, status lines, history pages, and the
unrecorded-edit warning in the log). Zensical: Zensical's own server knows nothing of the site's promises, so
the preview builds the site with the Zensical adapter (site_src/zensical_build.py: the same build as
`policy-site build`), serves the result, watches docs_dir and mkdocs.yml, rebuilds on every change (warnings and
errors in the log; after an error the last good build stays up), and pages in the browser reload themselves
once a rebuild is done (a small script the server adds to each HTML page it sends; nothing is written to the site).
"""

from __future__ import annotations

import functools
import http.server
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .build import BuildError, build, check_generator, default_generator

log = logging.getLogger("policy_site")
VERSION_PATH = "/__policy_site_preview/version"
# Polls the build number and reloads the page when a rebuild is done.
RELOAD_SCRIPT = (
    "<script>(()=>{let v=null;const p=()=>fetch(%r).then(r=>r.text()).then(t=>{if(v!==null&&t!==v)location.reload();"
    "v=t}).catch(()=>{}).finally(()=>setTimeout(p,700));p()})()</script>" % VERSION_PATH
)


def preview(config_file: Path, *, generator: str | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve a live preview of the site until interrupted."""
    generator = generator or default_generator()
    check_generator(generator)
    log.info(f"Previewing with {generator} on http://{host}:{port}/")
    if generator == "mkdocs":
        from mkdocs.commands.serve import serve

        serve(config_file=str(config_file), dev_addr=f"{host}:{port}", livereload=True)
        return
    with ZensicalPreview(config_file, host, port) as running:
        running.serve_forever()


class ZensicalPreview:
    """The Zensical preview: a rebuild loop in a thread and an HTTP server over the last good build."""

    def __init__(self, config_file: Path, host: str, port: int, *, interval: float = 0.4,
                 builder: Callable[[Path, Path], None] | None = None) -> None:
        self.config_file = config_file.resolve()
        from .project import load_config

        self.docs_dir = self.config_file.parent / str(load_config(self.config_file).get("docs_dir") or "docs")
        self.folder = Path(tempfile.mkdtemp(prefix="policy-site-preview-"))
        self.site = self.folder / "site"
        self.version = 0  # the number of good builds: pages reload when it changes
        self.interval = interval
        self._builder = builder or (lambda config, out: build(config, generator="zensical", site_dir=out))
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        handler = functools.partial(_Handler, preview=self)
        self.server = http.server.ThreadingHTTPServer((host, port), handler)
        self.address = f"http://{host}:{self.server.server_address[1]}/"

    def __enter__(self) -> ZensicalPreview:
        self.rebuild()
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.server_close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever()
        except KeyboardInterrupt:
            pass

    def rebuild(self) -> bool:
        """Build into a fresh folder and swap it in; on an error keep the last good site and log why."""
        target = self.folder / f"build-{self.version + 1}"
        try:
            self._builder(self.config_file, target)
        except BuildError as e:
            log.error(f"{e} (the preview shows the last good build)")
            shutil.rmtree(target, ignore_errors=True)
            return False
        old = self.folder / "old"
        if self.site.exists():
            self.site.rename(old)
        target.rename(self.site)
        shutil.rmtree(old, ignore_errors=True)
        self.version += 1
        log.info(f"Preview rebuilt ({self.version}).")
        return True

    def _snapshot(self) -> dict[str, float]:
        seen = {str(self.config_file): self.config_file.stat().st_mtime}
        for folder, dirs, names in os.walk(self.docs_dir):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                path = os.path.join(folder, name)
                try:
                    seen[path] = os.stat(path).st_mtime
                except FileNotFoundError:
                    pass
        return seen

    def _watch(self) -> None:
        last = self._snapshot()
        while not self._stop.wait(self.interval):
            now = self._snapshot()
            if now != last:
                last = now
                self.rebuild()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: object, preview: ZensicalPreview, **kwargs: object) -> None:
        self.preview = preview
        super().__init__(*args, directory=str(preview.site), **kwargs)  # type: ignore[arg-type]

    def translate_path(self, path: str) -> str:
        # The site folder is swapped on every rebuild: look it up for each request.
        self.directory = str(self.preview.site)
        return super().translate_path(path)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == VERSION_PATH:
            self._send(200, str(self.preview.version).encode(), "text/plain")
            return
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix == ".html":
            page = path if path.is_file() else self.preview.site / "404.html"
            html = page.read_text(encoding="utf-8") if page.is_file() else "<!doctype html><title>Not built</title>"
            self._send(200 if page == path else 404, html.replace("</body>", RELOAD_SCRIPT + "</body>", 1).encode(), "text/html; charset=utf-8")
            return
        super().do_GET()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass (for tests and scripts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()
