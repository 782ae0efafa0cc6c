"""Settings: the one place that reads the POLICY_SITE_* environment variables.

Everything else receives a `Settings` object explicitly, so tests build their own
without touching the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path


class SettingsError(ValueError):
    """An environment variable holds a value we cannot use."""


@dataclass(frozen=True)
class Settings:
    # The SQLite ledger file; with ledger_url set, the folder of link-keys.json by default and nothing else.
    ledger_path: Path = Path("var/ledger.sqlite3")
    # A postgresql:// URL (libpq form) when the ledger is on PostgreSQL; None: the file above.
    ledger_url: str | None = None
    # SQLite: the group-commit writer runs in a process of its own (ledger/sqlite/writer_process.py), so the
    # event loop does not share its GIL with SQLite; False keeps it a thread of the service's process.
    ledger_writer_process: bool = True
    # A path or an http(s) URL of the published policy-versions.json.
    manifest: str = "site/policy-versions.json"
    allowed_origins: tuple[str, ...] = ()
    # None turns the admin routes (export) off.
    admin_token: str | None = None
    max_body: int = 65536
    # Submissions per client per minute; 0 turns the limit off.
    rate_limit: int = 10
    # The built site served beside the API by `policy-site serve`.
    site_dir: Path = Path("site")
    # Mail (double opt-in confirmations and change notices).
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    mail_from: str = "policies@localhost"
    # Where people reach the site and the service; links in e-mails start here.
    base_url: str = "http://127.0.0.1:8000"
    # Key for signed links in e-mails; when unset, the key file below is used (created once, mode 0600).
    secret: str | None = field(default=None, repr=False)
    # Rotation: the previous secret still verifies links (never signs) until the end of this day (UTC).
    secret_previous: str | None = field(default=None, repr=False)
    secret_previous_until: date | None = None
    # The link key file when POLICY_SITE_SECRET is unset; never inside the ledger (secrets apart from data).
    # None: link-keys.json in the ledger's folder (fine on one machine; put it elsewhere in production).
    key_file: Path | None = None
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDR networks); none by default.
    forwarded_allow_ips: tuple[str, ...] = ()
    # Confirmation mails one address may receive in 24 hours, however many forms name it.
    mail_per_recipient: int = 3

    @property
    def ledger(self) -> str:
        """Where the ledger is, for form_handler.ledger.open_ledger: the PostgreSQL URL, else the file's path."""
        return self.ledger_url or str(self.ledger_path)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read POLICY_SITE_* once; unset variables keep their defaults."""
        env = os.environ if environ is None else environ
        d = cls()

        def get(name: str) -> str | None:
            value = env.get(f"POLICY_SITE_{name}")
            return value if value not in (None, "") else None

        def integer(name: str, default: int, minimum: int = 0) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(
                    f"POLICY_SITE_{name} must be a whole number, got {raw!r}."
                ) from None
            if value < minimum:
                raise SettingsError(f"POLICY_SITE_{name} must be at least {minimum}, got {value}.")
            return value

        def boolean(name: str, default: bool) -> bool:
            raw = get(name)
            if raw is None:
                return default
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise SettingsError(f"POLICY_SITE_{name} must be true or false, got {raw!r}.")

        def day(name: str) -> date | None:
            raw = get(name)
            if raw is None:
                return None
            try:
                return date.fromisoformat(raw)
            except ValueError:
                raise SettingsError(f"POLICY_SITE_{name} must be a date YYYY-MM-DD, got {raw!r}.") from None

        def listed(name: str) -> tuple[str, ...]:
            return tuple(o.strip() for o in (get(name) or "").split(",") if o.strip())

        previous, until = get("SECRET_PREVIOUS"), day("SECRET_PREVIOUS_UNTIL")
        if (previous is None) != (until is None):
            raise SettingsError(
                "POLICY_SITE_SECRET_PREVIOUS and POLICY_SITE_SECRET_PREVIOUS_UNTIL go together; set both or neither."
            )
        origins = get("ALLOWED_ORIGINS")
        ledger = get("LEDGER") or str(d.ledger_path)
        # A URL is not a path (Path() would fold its "//"): kept as given, for form_handler.ledger.open_ledger.
        url = ledger if ledger.startswith(("postgresql://", "postgres://")) else None
        return cls(
            ledger_path=d.ledger_path if url else Path(ledger),
            ledger_url=url,
            ledger_writer_process=boolean("LEDGER_WRITER_PROCESS", d.ledger_writer_process),
            manifest=get("MANIFEST") or d.manifest,
            allowed_origins=tuple(
                o.strip().rstrip("/") for o in (origins or "").split(",") if o.strip()
            ),
            admin_token=get("ADMIN_TOKEN"),
            max_body=integer("MAX_BODY", d.max_body, minimum=1),
            rate_limit=integer("RATE_LIMIT", d.rate_limit),
            site_dir=Path(get("SITE_DIR") or d.site_dir),
            smtp_host=get("SMTP_HOST") or d.smtp_host,
            smtp_port=integer("SMTP_PORT", d.smtp_port, minimum=1),
            smtp_starttls=boolean("SMTP_STARTTLS", d.smtp_starttls),
            smtp_user=get("SMTP_USER"),
            smtp_password=get("SMTP_PASSWORD"),
            mail_from=get("MAIL_FROM") or d.mail_from,
            base_url=(get("BASE_URL") or d.base_url).rstrip("/"),
            secret=get("SECRET"),
            secret_previous=previous,
            secret_previous_until=until,
            key_file=Path(k) if (k := get("KEY_FILE")) else None,
            forwarded_allow_ips=listed("FORWARDED_ALLOW_IPS"),
            mail_per_recipient=integer("MAIL_PER_RECIPIENT", d.mail_per_recipient, minimum=1),
        )
