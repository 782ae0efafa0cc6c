"""The service's pages in the site's shell (SITE_DIR/policy-shell.html): filled, re-read, strict CSP, fallback."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from service_client import V1, mail_settings, service_client

from form_handler.web.site_shell import CONTENT_MARKER, SHELL_NAME, TITLE_MARKER, SiteShell

SCRIPT = "__md_scope=new URL('/',location)"
SHELL = (f'<!doctype html><html lang="en"><head><title>{TITLE_MARKER}</title>'
         '<link rel="stylesheet" href="/assets/site.css"><script>' + SCRIPT + '</script></head>'
         '<body><header data-site-header>Cigna policies</header><div data-policy-banner>A change is active</div>'
         f'<article class="md-content__inner md-typeset">\n{CONTENT_MARKER}\n</article>'
         '<script src="/assets/bundle.js"></script></body></html>')


def _site(tmp_path: Path, shell: str = SHELL) -> Path:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / SHELL_NAME).write_text(shell, encoding="utf-8")
    return site


def test_service_page_is_the_site_shell_filled(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path, 9, site_dir=_site(tmp_path))
    with service_client(settings) as client:
        r = client.get("/api/manage")
    assert r.status_code == 200
    assert "<title>Manage your consent</title>" in r.text and "data-site-header" in r.text
    assert "data-policy-banner" in r.text and "<h1>Manage your consent</h1>" in r.text
    assert "data-manage-form" in r.text and "/api/pages.css" not in r.text


def test_error_pages_use_the_shell_too(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path, 9, site_dir=_site(tmp_path))
    with service_client(settings) as client:
        r = client.post("/api/feedback", data={"message": ""})
    assert r.status_code == 422 and "data-policy-banner" in r.text and "<title>Not sent</title>" in r.text


def test_shell_pages_allow_only_the_shells_own_inline_scripts(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path, 9, site_dir=_site(tmp_path))
    with service_client(settings) as client:
        csp = client.get("/api/manage").headers["content-security-policy"]
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    scripts = next(d for d in csp.split("; ") if d.startswith("script-src"))
    assert scripts == f"script-src 'self' 'sha256-{digest}'"
    assert "frame-ancestors 'self'" in csp and "style-src 'self' 'unsafe-inline'" in csp


def test_shell_is_read_again_only_when_the_file_changes(tmp_path: Path) -> None:
    site = _site(tmp_path)
    shell = SiteShell(site, ["https://policies.example"])
    first = shell.current()
    assert first is not None and shell.current() is first and shell.reads == 1
    (site / SHELL_NAME).write_text(SHELL.replace("Cigna policies", "Rebuilt site"), encoding="utf-8")
    os.utime(site / SHELL_NAME, ns=(1, 2_000_000_000))  # a new build: another mtime
    second = shell.current()
    assert second is not None and "Rebuilt site" in second.fill("t", "c") and shell.reads == 2


def test_pages_fall_back_to_their_own_look_without_a_shell(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path, 9, site_dir=tmp_path / "absent")
    with service_client(settings) as client:
        r = client.get("/api/manage")
    assert r.status_code == 200 and "/api/pages.css" in r.text and "data-manage-form" in r.text
    assert "script-src 'none'" in r.headers["content-security-policy"]


def test_a_shell_without_its_markers_is_not_used(tmp_path: Path) -> None:
    assert SiteShell(_site(tmp_path, SHELL.replace(CONTENT_MARKER, "")), []).current() is None
    assert SiteShell(_site(tmp_path, SHELL + TITLE_MARKER), []).current() is None


def test_title_and_content_are_escaped_into_the_shell(tmp_path: Path) -> None:
    shell = SiteShell(_site(tmp_path), []).current()
    assert shell is not None
    page = shell.fill("<script>x</script>", "<p>ok</p>")
    assert "<title>&lt;script&gt;x&lt;/script&gt;</title>" in page and "<p>ok</p>" in page


def test_receipt_page_in_the_shell_links_the_version_and_the_policy(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path, 9, site_dir=_site(tmp_path))
    form = {"message": "Hi", "policy_id": "privacy", "policy_version": V1, "page": "/feedback/"}
    with service_client(settings) as client:
        r = client.post("/api/feedback", data=form)
    assert r.status_code == 200 and "data-policy-banner" in r.text and "<title>Your feedback was recorded</title>" in r.text
    assert 'href="https://policies.example/privacy/versions/2026-01-01/">Privacy Policy</a>' in r.text
    assert 'href="https://policies.example/privacy/">Privacy Policy</a>' in r.text
    assert "data-receipt-download" in r.text and "script-src 'self' 'sha256-" in r.headers["content-security-policy"]


def test_email_link_pages_use_the_shell(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path, 9, site_dir=_site(tmp_path))
    with service_client(settings) as client:
        r = client.get("/api/confirm?token=not.a-token")
    assert r.status_code == 400 and "data-policy-banner" in r.text and "data-site-header" in r.text
    assert "<title>This link cannot be used</title>" in r.text
