"""`policy-site`: a thin click layer over the library (serve, ledger, notify, mail)."""

from __future__ import annotations

import click

from .settings import Settings, SettingsError


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as e:
        raise click.ClickException(str(e)) from None


@click.group()
@click.version_option(package_name="policy-site")
def cli() -> None:
    """Policy Site: publish policies and keep the consent ledger."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Build the site if needed and serve it together with the API in one process.

    Example:

        policy-site serve --port 8000
    """
    from .serve import serve as run_serve

    run_serve(load_settings(), host=host, port=port)


@cli.group()
def ledger() -> None:
    """Inspect and maintain the consent ledger."""


# --- ledger commands (verify, export, stats, erase, head) -----------------------------


# --- notify and mail commands --------------------------------------------------------


def main() -> None:
    cli()
