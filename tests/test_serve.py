"""`policy-site serve`: builds the site when missing, then serves it and the API from one port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from faultkit import free_port
from form_handler.serve import local_settings
from form_handler.settings import Settings

ROOT = Path(__file__).parent.parent
CLI = str(Path(sys.executable).with_name("policy-site"))


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"policy-site serve exited with {proc.returncode}"
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"policy-site serve did not answer within {timeout} s")


def test_serve_builds_the_site_and_serves_it_with_the_api_from_one_port(tmp_path: Path) -> None:
    port, site = free_port(), tmp_path / "site"
    env = {**os.environ, "POLICY_SITE_SITE_DIR": str(site), "POLICY_SITE_LEDGER": str(tmp_path / "ledger.sqlite3"),
           "NO_MKDOCS_2_WARNING": "1"}
    for name in ("POLICY_SITE_MANIFEST", "POLICY_SITE_BASE_URL"):
        env.pop(name, None)
    proc = subprocess.Popen([CLI, "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base + "/api/healthz", proc)
        assert (site / "index.html").is_file()
        home, health = httpx.get(base + "/"), httpx.get(base + "/api/healthz")
        assert home.status_code == 200 and "<html" in home.text
        assert home.headers.get("content-encoding") == "gzip"  # the static site is compressed ...
        assert health.status_code == 200 and health.json()["status"] == "ok"
        missing = httpx.get(base + "/no/such/page/")
        assert missing.status_code == 404 and "<html" in missing.text
        form = httpx.get(base + "/feedback/").text
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
        r = httpx.post(base + "/api/feedback", data={**fields, "message": "Sent from the served site"})
        assert r.status_code == 200 and "Your feedback was recorded" in r.text, r.text[:500]
        assert f'href="{base}/privacy/"' in r.text
        assert "content-encoding" not in r.headers  # ... the receipt, which shows the withdraw token, is not
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_local_settings_follow_the_site_folder_and_the_served_address() -> None:
    settings = local_settings(Settings(site_dir=Path("/tmp/x")), "127.0.0.1", 8123)
    assert settings.manifest == "/tmp/x/policy-versions.json" and settings.base_url == "http://127.0.0.1:8123"
    kept = local_settings(Settings(manifest="https://example.org/m.json", base_url="https://p.example"), "::1", 80)
    assert kept.manifest == "https://example.org/m.json" and kept.base_url == "https://p.example"
