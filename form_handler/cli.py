"""`policy-site`: a thin click layer over the library (serve, ledger, notify, mail)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import click

from form_handler.ledger import is_postgres
from form_handler.ledger import open_ledger as open_store
from form_handler.ledger.chain import ChainError, Checkpoint, utc_now
from form_handler.ledger.contract import LedgerStore
from form_handler.ledger.export import lines as export_lines
from form_handler.ledger.types import LedgerError
from form_handler.settings import Settings, SettingsError


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
    from form_handler.serve import serve as run_serve

    run_serve(load_settings(), host=host, port=port)


@cli.group()
def ledger() -> None:
    """Inspect and maintain the consent ledger."""


# --- ledger commands (verify, export, stats, erase, head, copy, backup) -------------------

ledger_option = click.option(
    "--ledger", "ledger_path", metavar="PATH_OR_URL", default=None,
    help="Ledger file, or a postgresql:// URL [default: POLICY_SITE_LEDGER or var/ledger.sqlite3].",
)


@contextmanager
def open_ledger(location: str | None, *, readonly: bool) -> Iterator[LedgerStore]:
    """Open the ledger for one command; library errors become `Error: ...` and exit 1."""
    try:
        led = open_store(location or load_settings().ledger, readonly=readonly)
    except LedgerError as e:
        raise click.ClickException(str(e)) from None
    try:
        yield led
    except (LedgerError, ChainError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        led.close()


@ledger.command()
@ledger_option
@click.option("--against", metavar="CHECKPOINT", help="A checkpoint file (from `ledger head`) or its JSON text.")
def verify(ledger_path: str | None, against: str | None) -> None:
    """Check the whole hash chain; exit 1 naming the first entry that does not match.

    With --against, also fail when the ledger no longer extends that earlier checkpoint
    (entries cut off the end, or history rewritten with recomputed hashes).

    Example:

        policy-site ledger verify --against checkpoints/2026-11-20.json
    """
    checkpoint = None
    if against is not None:
        try:
            text = against if against.lstrip().startswith("{") else Path(against).read_text()
            checkpoint = Checkpoint.from_json(text)
        except (OSError, ChainError) as e:
            raise click.ClickException(f"--against {against}: {e}") from None
    with open_ledger(ledger_path, readonly=True) as led:
        report = led.verify(against=checkpoint)
        line = led.settings_line()
    click.echo(report.summary())
    click.echo(line)
    if not report.ok:
        raise click.ClickException(f"{_shown(led)}: {report.problem}.")


def _shown(led: LedgerStore) -> str:
    # A URL may carry a password: name the database without it.
    if not is_postgres(led.location):
        return led.location
    from form_handler.ledger.postgres.store import redact

    return redact(led.location)


@ledger.command()
@ledger_option
def head(ledger_path: str | None) -> None:
    """Print a checkpoint (entry count, head hash, time) as JSON, to publish or store elsewhere.

    Example:

        policy-site ledger head > checkpoints/$(date +%F).json
    """
    with open_ledger(ledger_path, readonly=True) as led:
        click.echo(led.head().to_json())


@ledger.command()
@ledger_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--third-party", is_flag=True, help="Only email addresses whose confirmed third-party consent stands.")
def export(ledger_path: str | None, fmt: str, third_party: bool) -> None:
    """Write the ledger to stdout: every entry with personal data and status, or third-party emails.

    CSV cells that a spreadsheet would run as a formula start with a '.

    Example:

        policy-site ledger export --format csv --third-party > partners.csv
    """
    with open_ledger(ledger_path, readonly=True) as led:
        for line in export_lines(led.export(third_party=third_party), fmt, third_party=third_party):
            click.echo(line, nl=False)


@ledger.command()
@ledger_option
def stats(ledger_path: str | None) -> None:
    """Print aggregate counts of standing consents as JSON; counts below 5 are left out or null.

    Example:

        policy-site ledger stats
    """
    with open_ledger(ledger_path, readonly=True) as led:
        click.echo(json.dumps(led.stats(), indent=2))


@ledger.command()
@ledger_option
@click.argument("receipt_id")
def erase(ledger_path: str | None, receipt_id: str) -> None:
    """Erase the email address and message of RECEIPT_ID and record an erasure entry.

    The chain still verifies: entries hold only a salted commitment, and the salt is erased too.

    Example:

        policy-site ledger erase 3f2a9c0e5b7d41e8a6c2f0b9d8e7a1c4
    """
    with open_ledger(ledger_path, readonly=False) as led:
        entry = led.erase(receipt_id)
    click.echo(f"Erased the personal data of receipt {receipt_id} (erasure entry #{entry.seq}).")


@ledger.command()
@click.argument("source", metavar="SOURCE")
@click.argument("target", metavar="TARGET")
def copy(source: str, target: str) -> None:
    """Copy a ledger entry by entry into an empty one (SQLite file or postgresql:// URL, either way).

    Every entry's stored bytes and hash, and the personal data beside the chain, are copied as they are;
    a TARGET that already holds entries is refused. Both are verified and both heads printed: they must
    be equal. Stop the service writing to SOURCE first, or the copy ends at the head it read.

    Example:

        policy-site ledger copy var/ledger.sqlite3 postgresql://policy@db.internal/policy
    """
    with open_ledger(source, readonly=True) as src, open_ledger(target, readonly=False) as dst:
        copied = dst.load_raw(src.raw_entries(), src.raw_personal())
        checks = [(name, led.verify()) for name, led in (("source", src), ("target", dst))]
    for name, report in checks:
        click.echo(f"{name}: {report.count} entries, head {report.head}, chain {'ok' if report.ok else 'BROKEN'}")
    bad = [f"{name}: {report.problem}" for name, report in checks if not report.ok]
    if bad:
        raise click.ClickException("; ".join(bad) + ".")
    if checks[0][1].head != checks[1][1].head:
        raise click.ClickException("the heads differ: the source changed during the copy; copy again into an empty ledger.")
    click.echo(f"copied {copied} entries.")


@ledger.command()
@ledger_option
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
def backup(ledger_path: str | None, dest: Path) -> None:
    """Write a consistent copy of a live SQLite ledger to DEST while the service keeps writing; verify it.

    Uses SQLite's online backup: one snapshot, the writers never wait. Prints the copy's head.
    To restore, stop the service and put DEST in the ledger's place (remove its -wal and -shm files).
    On PostgreSQL use its own tools instead (pg_dump, pg_basebackup, point-in-time recovery).

    Example:

        policy-site ledger backup /backups/ledger-$(date +%F).sqlite3
    """
    with open_ledger(ledger_path, readonly=False) as led:
        if led.backend != "sqlite":
            raise click.ClickException(
                "ledger backup copies a SQLite file; back up PostgreSQL with its own tools (pg_dump, "
                "pg_basebackup, point-in-time recovery), see the README."
            )
        led.backup(dest)  # type: ignore[attr-defined]
    with open_ledger(str(dest), readonly=True) as copy_:
        report = copy_.verify()
    click.echo(report.summary())
    if not report.ok:
        raise click.ClickException(f"{dest}: {report.problem}.")
    click.echo(Checkpoint(report.count, report.head, utc_now()).to_json())


# --- notify and mail commands --------------------------------------------------------


@cli.command()
@ledger_option
@click.option(
    "--manifest", default=None, metavar="PATH_OR_URL",
    help="The published policy-versions.json [default: POLICY_SITE_MANIFEST or site/policy-versions.json].",
)
@click.option("--dry-run", is_flag=True, help="Count who would be written to; send and record nothing.")
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=None, metavar="N",
    help="Send at most N messages per second (e.g. 0.5, 20) [default: unpaced, one message after the other].",
)
@click.option("-v", "--verbose", is_flag=True, help="One line per person (would notify, sent, skipped).")
def notify(ledger_path: str | None, manifest: str | None, dry_run: bool, rate: float | None, verbose: bool) -> None:
    """E-mail each confirmed subscriber once about material policy changes since the version they agreed to.

    Each notice is recorded in the ledger right after the mail server took it, before the next one
    is sent, so running the command again sends nothing twice and carries on where a stopped or killed
    run left off. After a crash, only the one message that was in flight may be sent once more.
    A progress line appears every 10 seconds; failures are always listed, other people with --verbose.

    Example:

    \b
        policy-site notify --manifest site/policy-versions.json --dry-run
        policy-site notify --manifest site/policy-versions.json --rate 20
    """
    from form_handler.mail.message import MailError
    from form_handler.consent.manifest import ManifestUnavailable
    from form_handler.mail.notify import NotifyError
    from form_handler.mail.notify import run as run_notify

    settings = load_settings()
    with open_ledger(ledger_path, readonly=dry_run) as led:
        try:
            result = run_notify(led, settings, manifest or settings.manifest, dry_run=dry_run, rate=rate,
                                verbose=verbose, echo=click.echo)
        except (NotifyError, ManifestUnavailable, MailError) as e:
            raise click.ClickException(str(e)) from None
    if dry_run:
        click.echo(f"{result.planned} would be notified; nothing was sent or recorded.")
        return
    click.echo(f"{result.sent} notified, {result.failed} failed.")
    if result.stopped:
        raise click.ClickException(
            f"Sending stopped: {result.stopped}; {result.not_tried} were not tried. Run notify again once the "
            "mail server takes messages: it carries on with those not yet told."
        )
    if result.failed:
        raise click.ClickException(
            f"{result.failed} notices could not be sent and were not recorded; run notify again to retry them."
        )


@cli.group()
def mail() -> None:
    """The outgoing mail queue (address confirmations)."""


@mail.command("send")
@ledger_option
def mail_send(ledger_path: str | None) -> None:
    """Send every queued message that is due, once; failures are retried later with back-off.

    The service already does this in the background; this command is for running it from cron
    when the service does not run, or to flush the queue by hand.

    Example:

        policy-site mail send --ledger var/ledger.sqlite3
    """
    from form_handler.mail import outbox
    settings = load_settings()
    with open_ledger(ledger_path, readonly=False) as led:
        result = outbox.send_due(led, settings)
        counts = outbox.status(led)
    click.echo(
        f"sent {result.sent}, failed {result.failed} (gave up on {result.gave_up}); "
        f"queued {counts['queued']}, sent in all {counts['sent']}, given up in all {counts['gave_up']}."
    )
    if result.failed > result.gave_up:
        raise click.ClickException("some messages could not be sent now; they stay queued and are retried with back-off.")


# --- link keys ------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """The key that signs the links in our e-mails (kept outside the ledger)."""


@keys.command("rotate")
@click.option("--verify-until", "until", required=True, metavar="YYYY-MM-DD",
              type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Last day (UTC) on which links signed with the current key still work.")
def keys_rotate(until: datetime) -> None:
    """Make a new signing key in the key file; the current key still verifies links until --verify-until.

    Restart the service (every instance) afterwards so it signs with the new key. With POLICY_SITE_SECRET
    set, rotate with POLICY_SITE_SECRET_PREVIOUS and POLICY_SITE_SECRET_PREVIOUS_UNTIL instead.

    Example:

        policy-site keys rotate --verify-until 2027-06-30
    """
    from form_handler.consent import keys as link_keys
    settings = load_settings()
    if settings.secret:
        raise click.ClickException(
            "POLICY_SITE_SECRET is set, so the key file is not used; rotate by moving the old secret to "
            "POLICY_SITE_SECRET_PREVIOUS, setting POLICY_SITE_SECRET_PREVIOUS_UNTIL and a new POLICY_SITE_SECRET."
        )
    path = link_keys.key_file_path(settings)
    if until.date() < datetime.now(timezone.utc).date():
        raise click.ClickException(f"--verify-until {until.date()} is in the past; give today or a later day.")
    try:
        link_keys.adopt_legacy_key(settings)
        rotated = link_keys.rotate(path, until.date())
    except link_keys.KeyFileError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{path}: a new key signs; {len(rotated.previous)} older key(s) verify until their dates. "
               "Restart every service instance now.")


_GENERATOR = click.option(
    "--generator", type=click.Choice(["mkdocs", "zensical"]), default=None,
    help="Site generator (default: MkDocs while it is installed, else Zensical).",
)
_CONFIG_FILE = click.option(
    "-f", "--config-file", type=click.Path(dir_okay=False, path_type=Path), default=Path("mkdocs.yml"),
    show_default=True, help="The site's mkdocs.yml.",
)


@cli.command()
@_CONFIG_FILE
@_GENERATOR
@click.option("-d", "--site-dir", type=click.Path(file_okay=False, path_type=Path), help="Where to write the site.")
@click.option("--strict", is_flag=True, help="Fail on warnings: an unrecorded edit, an unused pattern, no site_url.")
def build(config_file: Path, generator: str | None, site_dir: Path | None, strict: bool) -> None:
    """Build the policy site with MkDocs or Zensical: banner, history, feed, manifest, form and page shell.

    Example:

        policy-site build --strict --generator zensical
    """
    from site_src import build as site_build

    site_build.setup_logging()
    try:
        site_build.build(config_file, generator=generator, site_dir=site_dir, strict=strict)
    except site_build.BuildError as e:
        raise click.ClickException(str(e)) from None


@cli.command()
@_CONFIG_FILE
@_GENERATOR
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
def preview(config_file: Path, generator: str | None, host: str, port: int) -> None:
    """Serve a live preview for writers, rebuilt on every save (banner, history, unrecorded-edit warnings).

    Example:

        policy-site preview --generator zensical
    """
    from site_src import build as site_build
    from site_src.preview import preview as run_preview

    site_build.setup_logging()
    try:
        run_preview(config_file, generator=generator, host=host, port=port)
    except site_build.BuildError as e:
        raise click.ClickException(str(e)) from None


def main() -> None:
    cli()
