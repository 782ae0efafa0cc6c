"""`policy-site notify`: tell each subscriber, once, about the material changes since their version.

Who is written to, per policy: every address (case-insensitive) with a standing receipt that asked for
updates and whose address was confirmed, and whose latest agreement (consent or reconsent) on a
confirmed receipt is to a version older than a material change; an unconfirmed submission of the
address changes neither (subscribers.py). One message per address, about the newest such change; when
several changes are pending it lists the earlier ones too, so nobody gets a stack of mails about texts
that are already superseded. Each change the message covered is recorded as a `notice` entry right
after the server took the message and before the next one is sent, and an address already noticed for
the newest change is skipped: re-running sends nothing twice.

The one gap is a crash (or a lost connection to the ledger) after the server took a message and
before its notice entry was committed: that one message is sent again by the next run.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import apsw

from . import keys, subscribers, tokens
from .ledger import META_SCHEMA, Ledger
from .mail import ChangeNotice, MailError, SmtpSession, notice_message, smtp_session
from .manifest import read_source
from .settings import Settings
from .subscribers import Person


class NotifyError(Exception):
    """The run cannot start or must stop; one plain sentence."""


@dataclass(frozen=True)
class PolicyHistory:
    """What the manifest says about one policy: its versions oldest first, its material changes newest first."""

    id: str
    title: str
    url: str
    versions: tuple[str, ...]
    changes: tuple[ChangeNotice, ...]
    skipped: tuple[str, ...] = ()  # material changes we could not tie to a version, for the report


@dataclass(frozen=True)
class Planned:
    person: Person
    notice: ChangeNotice
    earlier: tuple[ChangeNotice, ...]


@dataclass
class NotifyResult:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    planned: list[Planned] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # withdrew, unsubscribed, was erased or told since the plan


def load_histories(data: bytes, source: str) -> list[PolicyHistory]:
    """Read policy-versions.json; raise NotifyError naming the manifest and the field."""
    try:
        doc = json.loads(data.decode("utf-8"))
        return [_history(p) for p in doc["policies"]]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise NotifyError(f"{source}: not a policy-versions.json with policies, changes and versions ({e!r}).") from None


def _history(p: dict[str, Any]) -> PolicyHistory:
    listed = [(v.get("effective") or "", bool(v.get("current")), i, str(v["version"])) for i, v in enumerate(p["versions"])]
    # Oldest first by effective date, the current version last on a tie; list order breaks other ties.
    versions = tuple(dict.fromkeys(v for *_, v in sorted(listed)))
    if str(p["version"]) not in versions:
        versions += (str(p["version"]),)
    effective_to_version: dict[str, str] = {}
    for effective, _, _, version in sorted(listed):
        effective_to_version[effective] = version  # the last (newest) text effective that day wins
    changes, skipped = [], []
    for c in p.get("changes", []):
        if not c.get("material"):
            continue
        introduced = c.get("version") or effective_to_version.get(str(c["effective"]))
        if not introduced or str(introduced) not in versions:
            skipped.append(str(c["date"]))
            continue
        changes.append(
            ChangeNotice(
                policy_id=str(p["id"]), title=str(p.get("title") or p["id"]), url=str(p["url"]),
                date=str(c["date"]), effective=str(c["effective"]), summary=str(c.get("summary", "")),
                version=str(introduced),
            )
        )
    return PolicyHistory(str(p["id"]), str(p.get("title") or p["id"]), str(p["url"]), versions, tuple(changes), tuple(skipped))


def plan(history: PolicyHistory, people: list[Person]) -> list[Planned]:
    """Who gets which notice (pure): subscribed, on an older version, not yet told about the newest change."""
    rank = {v: i for i, v in enumerate(history.versions)}
    out = []
    for person in people:
        if not person.subscribed:
            continue
        mine = rank.get(person.latest_version)
        if mine is None:
            # A version the manifest does not list: fall back to dates (agreed before the change was made).
            pending = [c for c in history.changes if person.latest_at[:10] < c.date]
        else:
            pending = [c for c in history.changes if rank[c.version] > mine]
        if not pending or pending[0].version in person.noticed:
            continue
        earlier = tuple(c for c in pending[1:] if c.version not in person.noticed)
        out.append(Planned(person, pending[0], earlier))
    return out


def _links(key: bytes, settings: Settings, p: Planned, now: float) -> dict[str, str]:
    def link(purpose: tokens.Purpose, path: str) -> str:
        t = tokens.sign(key, purpose, p.person.latest_receipt_id, p.notice.policy_id, p.notice.version, now=now)
        return f"{settings.base_url}/api/{path}?token={t}"

    return {
        "reconsent_url": link("reconsent", "reconsent"),
        "withdraw_url": link("withdraw", "withdraw-consent"),
        "unsubscribe_url": link("unsubscribe", "unsubscribe"),
    }


def _record(ledger: Ledger, p: Planned) -> None:
    # One transaction for every change the message covered, committed before the next message goes out.
    with ledger.transaction() as txn:
        for c in (p.notice, *p.earlier):
            txn.append(
                "notice", p.person.latest_receipt_id, policy_id=c.policy_id, policy_version=c.version,
                change_date=c.date, effective=c.effective,
            )


def find_planned(ledger: Ledger, histories: list[PolicyHistory]) -> list[Planned]:
    conn = ledger.connection
    conn.execute("BEGIN")  # one snapshot for the whole plan
    try:
        return [p for h in histories for p in plan(h, subscribers.people(conn, h.id))]
    finally:
        conn.execute("COMMIT")


def run(
    ledger: Ledger,
    settings: Settings,
    manifest: str,
    *,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> NotifyResult:
    """Send the notices (or, with dry_run, only list them). Raises NotifyError when it cannot go on."""
    histories = load_histories(read_source(manifest, timeout=10), manifest)
    for h in histories:
        for date in h.skipped:
            echo(f"warning: {h.id} change of {date} names no version the manifest lists; nobody is told about it.")
    if dry_run:
        result = NotifyResult(planned=find_planned(ledger, histories))
        for p in result.planned:
            echo(f"would notify {p.person.email}: {p.notice.policy_id} change of {p.notice.date}")
        return result
    with run_lock(ledger.connection):
        return _send(ledger, settings, NotifyResult(planned=find_planned(ledger, histories)), echo)


def _send(ledger: Ledger, settings: Settings, result: NotifyResult, echo: Callable[[str], None]) -> NotifyResult:
    if not result.planned:
        return result
    key = keys.load(settings).signing
    with _Connections(settings) as smtp:
        for p in result.planned:
            # The plan is one snapshot and sending takes minutes: re-read this person's standing first.
            now = subscribers.current(ledger.connection, p.person)
            if now is None or not now.subscribed or p.notice.version in now.noticed:
                result.skipped.append(p.person.email)
                echo(f"skipped {p.person.email}: no longer subscribed, or already told")
                continue
            msg = notice_message(settings, to=p.person.email, notice=p.notice, earlier=p.earlier, **_links(key, settings, p, time.time()))
            try:
                smtp.session().send(msg)
            except MailError as e:
                smtp.reset()
                result.failed.append(p.person.email)
                echo(f"failed {p.person.email}: {e}")
                continue
            _record(ledger, p)  # LedgerUnavailable stops the run: never send what we cannot record
            result.sent.append(p.person.email)
            echo(f"sent {p.person.email}: {p.notice.policy_id} change of {p.notice.date}")
    return result


@contextmanager
def run_lock(connection: Any) -> Iterator[None]:
    """One notify run at a time per ledger: two runs planning from one snapshot would both send.

    The lock is a row in the ledger's `meta` table naming the process; a run killed without
    releasing it is detected (its process is gone) and the lock is taken over.
    """
    mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()})
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(META_SCHEMA)
        row = connection.execute("SELECT value FROM meta WHERE name = 'notify_run'").fetchone()
        if row is not None and _alive(json.loads(row[0])):
            other = json.loads(row[0])
            raise NotifyError(
                f"Another notify run (process {other['pid']} on {other['host']}) is in progress; "
                "wait for it to finish, then run notify again."
            )
        connection.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('notify_run', ?)", (mine,))
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    try:
        yield
    finally:
        # If this fails (ledger gone read-only), the next run sees our process is gone and takes over.
        with suppress(apsw.Error):
            connection.execute("DELETE FROM meta WHERE name = 'notify_run' AND value = ?", (mine,))


def _alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return time.time() - float(holder.get("at", 0)) < 6 * 3600  # cannot look; trust it for a while
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Connections:
    """One SMTP connection for the run, opened again after a failure."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cm: Any = None
        self._session: SmtpSession | None = None

    def session(self) -> SmtpSession:
        if self._session is None:
            self._cm = smtp_session(self._settings)
            self._session = self._cm.__enter__()
        return self._session

    def reset(self) -> None:
        if self._cm is not None:
            try:
                self._cm.__exit__(None, None, None)
            finally:
                self._cm = self._session = None

    def __enter__(self) -> _Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()
