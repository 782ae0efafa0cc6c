"""`policy-site preview` under each generator: served, then rebuilt with banner and status as the writer edits."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from site_src.preview import RELOAD_SCRIPT, VERSION_PATH, ZensicalPreview, wait_for

FIXTURE = Path(__file__).parent / "fixtures" / "policies"
SUMMARY = "Explained how long feedback is kept."


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own server on loopback
            return str(response.read().decode("utf-8"))
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_zensical_preview_rebuilds_on_save_and_keeps_the_last_good_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1795564800")  # 2026-11-25: the terms change is announced
    project = shutil.copytree(FIXTURE, tmp_path / "project")
    with ZensicalPreview(project / "mkdocs.yml", "127.0.0.1", 0, interval=0.2) as preview:
        threading.Thread(target=preview.serve_forever, daemon=True).start()
        page = fetch(preview.address + "terms/")
        assert SUMMARY in page and "data-policy-status" in page and RELOAD_SCRIPT in page
        assert fetch(preview.address + VERSION_PATH.lstrip("/")) == "1"
        terms = project / "docs" / "terms.md"
        terms.write_text(terms.read_text().replace(SUMMARY, "Kept for a year, now."), encoding="utf-8")
        assert wait_for(lambda: "Kept for a year, now." in fetch(preview.address))
        assert preview.version == 2
        with caplog.at_level(logging.ERROR, logger="policy_site"):
            terms.write_text(terms.read_text().replace("date: 2026-11-10", "date: 2026-13-01"), encoding="utf-8")
            assert wait_for(lambda: "changes[0].date must be YYYY-MM-DD" in caplog.text)
        assert preview.version == 2 and "Kept for a year, now." in fetch(preview.address)
    assert not preview.folder.exists()


def test_mkdocs_preview_is_mkdocs_serve_with_the_plugin(tmp_path: Path) -> None:
    project = shutil.copytree(FIXTURE, tmp_path / "project")
    port = free_port()
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1795564800", "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-c", "from form_handler.cli import main; main()", "preview", "--generator", "mkdocs", "--port", str(port)]
    server = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        assert wait_for(lambda: SUMMARY in fetch(url + "terms/"), timeout=60)
        terms = project / "docs" / "terms.md"
        time.sleep(0.5)
        terms.write_text(terms.read_text().replace(SUMMARY, "Kept for a year, now."), encoding="utf-8")
        assert wait_for(lambda: "Kept for a year, now." in fetch(url), timeout=60)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "Previewing with mkdocs" in output
