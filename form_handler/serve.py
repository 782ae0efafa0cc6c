"""`policy-site serve`: the built site and the API from one uvicorn process, for local use.

The API keeps the same /api paths as `uvicorn form_handler.web.app:app`; the site is mounted at "/", and
unknown paths get the site's own 404.html with status 404.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import click
import uvicorn

from form_handler.consent import keys as link_keys
from form_handler.web.app import create_app
from form_handler.settings import Settings


class ServeError(click.ClickException):
    """The site could not be built or served; the message says what to do."""


def build_site(site_dir: Path, project_dir: Path) -> None:
    """Run `mkdocs build` for the project into site_dir (in a child process: MkDocs is not imported here)."""
    if not (project_dir / "mkdocs.yml").is_file():
        raise ServeError(
            f"{site_dir}/index.html is missing and {project_dir} has no mkdocs.yml; run policy-site serve "
            "from the project folder, or build the site into POLICY_SITE_SITE_DIR first."
        )
    cmd = [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(site_dir.resolve())]
    click.echo(f"Building the site into {site_dir} ...", err=True)
    if subprocess.run(cmd, cwd=project_dir).returncode != 0:
        raise ServeError(f"mkdocs build failed in {project_dir}; fix the error above, then run policy-site serve again.")


def local_settings(settings: Settings, host: str, port: int) -> Settings:
    """Defaults that follow the site folder and the address actually served."""
    defaults = Settings()
    if settings.manifest == defaults.manifest:
        settings = replace(settings, manifest=str(settings.site_dir / "policy-versions.json"))
    if settings.base_url == defaults.base_url:
        # Links on the receipt pages go back to the site we serve.
        shown = f"[{host}]" if ":" in host else host
        settings = replace(settings, base_url=f"http://{shown}:{port}")
    return settings


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, *, project_dir: Path | None = None) -> None:
    """Build the site if site_dir has no index.html, then serve it and the API until interrupted."""
    project_dir = project_dir or Path.cwd()
    if not (settings.site_dir / "index.html").is_file():
        build_site(settings.site_dir, project_dir)
    settings = local_settings(settings, host, port)
    try:
        link_keys.load(settings)  # a key file others can read stops us here, with the fix, before uvicorn starts
    except link_keys.KeyFileError as e:
        raise ServeError(str(e)) from None
    app = create_app(settings, site_dir=settings.site_dir)
    click.echo(f"Serving the site and the API on http://{host}:{port}/ (ledger: {settings.ledger_path})", err=True)
    # No access log: it would print client addresses, which we promise not to keep.
    uvicorn.run(app, host=host, port=port, access_log=False, proxy_headers=False, log_level="info")
