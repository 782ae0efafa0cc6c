"""`policy-site notify`: tell each subscriber, once, about the material changes since their version.

Who is written to, per policy: every address (case-insensitive) with a standing receipt that asked for
updates and whose address was confirmed, and whose latest agreement (consent or reconsent) on a
confirmed receipt is to a version older than a material change; an unconfirmed submission of the
address changes neither (subscribers.py). One message per address, about the newest such change; when
several changes are pending it lists the earlier ones too, so nobody gets a stack of mails about texts
that are already superseded. Each change the message covered is recorded as a `notice` entry right
after the server took the message and before the next one is sent, and an address already noticed for
the newest change is skipped: re-running sends nothing twice.

A run takes memory independent of the number of people, in two steps:

1. Plan, in one read snapshot: SQLite sorts the policy's receipts by address (on disk beyond its page
   cache) and each person is planned as their rows arrive, then forgotten. The receipt ids of those to
   write to go to a temporary plan file; no addresses do. The snapshot ends with the plan: a reader
   held open while sending for hours would keep SQLite from ever restarting the WAL file.
2. Send, person by person from that file: re-read the person's receipts and plan them again just
   before the mail (they may have withdrawn, unsubscribed, been erased, agreed or been told meanwhile),
   send, record, then the next; at most `rate` messages a second when asked.

Resuming needs nothing but the ledger: a new run plans again and leaves out everyone already told. The
one gap is a crash (or a lost connection to the ledger) after the server took a message and before its
notice entry was committed: that one message is sent again by the next run.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, Any

from form_handler.consent import keys, links, subscribers, tokens
from form_handler.consent.manifest import ManifestUnavailable, policy_records, read_source
from form_handler.consent.subscribers import Person
from form_handler.ledger.contract import LedgerStore, LedgerView
from form_handler.ledger.types import LedgerError
from form_handler.mail.message import ChangeNotice, MailError, SmtpSession, notice_message, smtp_session
from form_handler.settings import Settings

# Seconds between two progress lines: often enough to see a run is alive, rare enough to read.
PROGRESS_EVERY = 10.0
# Messages failing one after another mean the mail server is down or refuses us: trying the other
# 500,000 people, each with a connection attempt of up to 30 s, helps nobody. A new run resumes.
MAX_FAILURES_IN_A_ROW = 20


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

    @cached_property
    def rank(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.versions)}


@dataclass(frozen=True)
class Planned:
    person: Person
    notice: ChangeNotice
    earlier: tuple[ChangeNotice, ...]


@dataclass
class NotifyResult:
    """Counts only: a run over a million people keeps no list of them."""

    planned: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0  # withdrew, unsubscribed, was erased, agreed or was told since the plan
    told_before: int = 0  # left out of the plan: already told about the newest change (an earlier run)
    per_change: dict[str, int] = field(default_factory=dict)  # "privacy change of 2026-11-20" -> planned
    stopped: str | None = None  # why sending stopped before the end of the plan

    @property
    def not_tried(self) -> int:
        return self.planned - self.sent - self.failed - self.skipped


def load_histories(data: bytes, source: str) -> list[PolicyHistory]:
    """Read policy-versions.json (manifest.policy_records); raise NotifyError naming the manifest and the field."""
    try:
        return [_history(p) for p in policy_records(data, source)]
    except ManifestUnavailable as e:
        raise NotifyError(str(e)) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise NotifyError(f"{source}: not a policy-versions.json with policies, changes and versions ({e!r}).") from None


def _history(p: dict[str, Any]) -> PolicyHistory:
    # The manifest lists versions newest first (site_src/timeline.py), so on one effective day a version further
    # down the list is the older one: -i sorts it first. Several texts can take effect on one day
    # (versions/<date>/, then <date>-2/ ...), above all in history adopted from git.
    listed = [(v.get("effective") or "", bool(v.get("current")), -i, str(v["version"])) for i, v in enumerate(p["versions"])]
    # Oldest first by effective date, the current version last on a tie, then by the manifest's order.
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


def _pending(history: PolicyHistory, person: Person) -> list[ChangeNotice]:
    # The material changes newer than the person's latest agreement, newest first.
    mine = history.rank.get(person.latest_version)
    if mine is None:
        # A version the manifest does not list: fall back to dates (agreed before the change was made).
        return [c for c in history.changes if person.latest_at[:10] < c.date]
    return [c for c in history.changes if history.rank[c.version] > mine]


def plan_person(history: PolicyHistory, person: Person) -> Planned | None:
    """Which notice a person gets (pure): subscribed, on an older version, not yet told about the newest change."""
    if not person.subscribed:
        return None
    pending = _pending(history, person)
    if not pending or pending[0].version in person.noticed:
        return None
    earlier = tuple(c for c in pending[1:] if c.version not in person.noticed)
    return Planned(person, pending[0], earlier)


def _told_before(history: PolicyHistory, person: Person) -> bool:
    pending = _pending(history, person) if person.subscribed else []
    return bool(pending) and pending[0].version in person.noticed


def _label(notice: ChangeNotice) -> str:
    return f"{notice.policy_id} change of {notice.date}"


def _links(key: bytes, settings: Settings, p: Planned, now: float) -> dict[str, str]:
    def link(purpose: tokens.Purpose) -> str:
        t = tokens.sign(key, purpose, p.person.latest_receipt_id, p.notice.policy_id, p.notice.version, now=now)
        return links.url(settings.base_url, purpose, t)

    return {
        "reconsent_url": link("reconsent"),
        "withdraw_url": link("withdraw"),
        "unsubscribe_url": link("unsubscribe"),
    }


def _record(ledger: LedgerStore, p: Planned) -> None:
    # One transaction for every change the message covered, committed before the next message goes out.
    with ledger.transaction() as txn:
        for c in (p.notice, *p.earlier):
            txn.append(
                "notice", p.person.latest_receipt_id, policy_id=c.policy_id, policy_version=c.version,
                change_date=c.date, effective=c.effective,
            )


class _Progress:
    """A line every `every` seconds: enough for an operator to see the run is alive and when it ends."""

    def __init__(self, result: NotifyResult, echo: Callable[[str], None], every: float) -> None:
        self.result, self.echo, self.every = result, echo, every
        self.people = 0  # confirmed addresses read while planning
        self.started = self._last = time.monotonic()

    def _due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.every:
            return False
        self._last = now
        return True

    def planning(self) -> None:
        if self._due():
            self.echo(f"planning: {self.people:,} confirmed addresses read, {self.result.planned:,} to notify so far")

    def planned(self, rate: float | None) -> None:
        r = self.result
        self.echo(f"planned {r.planned:,} notices in {_duration(time.monotonic() - self.started)}; "
                  f"{r.told_before:,} people were told in an earlier run")
        for label, n in r.per_change.items():
            self.echo(f"  {label}: {n:,}")
        if r.planned and rate:
            self.echo(f"at most {rate:g} messages per second: sending takes {_duration(r.planned / rate)} or more")
        self.started = self._last = time.monotonic()

    def sending(self, *, final: bool = False) -> None:
        if not (final or self._due()):
            return
        r = self.result
        done = r.sent + r.failed + r.skipped
        elapsed = time.monotonic() - self.started
        counts = f"{r.sent:,} sent, {r.skipped:,} skipped, {r.failed:,} failed"
        if final:
            self.echo(f"finished {done:,} of {r.planned:,} in {_duration(elapsed)}: {counts}")
            return
        speed = done / elapsed if elapsed > 0 else 0.0
        left = f", about {_duration((r.planned - done) / speed)} left" if speed else ""
        self.echo(f"progress: {done:,} of {r.planned:,} done ({counts}), {speed:.1f}/s{left}")


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class _Pace:
    """At most `rate` messages a second: each attempt starts 1/rate s or more after the one before."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    def wait(self) -> None:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def started(self) -> None:
        # From this attempt's start, not from a schedule: after a slow reply we do not burst to catch up.
        self._next = time.monotonic() + self._interval


def _plan(view: LedgerView, histories: list[PolicyHistory], result: NotifyResult,
          progress: _Progress) -> Generator[tuple[int, Planned], None, None]:
    # Run inside one ledger read: one snapshot for the whole plan, which ends with it.
    for index, history in enumerate(histories):
        for person in subscribers.each_person(view, history.id):
            progress.people += 1
            progress.planning()
            p = plan_person(history, person)
            if p is None:
                result.told_before += _told_before(history, person)
                continue
            result.planned += 1
            result.per_change[_label(p.notice)] = result.per_change.get(_label(p.notice), 0) + 1
            yield index, p


def run(
    ledger: LedgerStore,
    settings: Settings,
    manifest: str,
    *,
    dry_run: bool = False,
    rate: float | None = None,
    verbose: bool = False,
    echo: Callable[[str], None] = print,
    progress_every: float = PROGRESS_EVERY,
) -> NotifyResult:
    """Send the notices (or, with dry_run, only count them), at most `rate` a second when given.

    `echo` gets a progress line every `progress_every` seconds and one line per failure; with `verbose`,
    one line per person too. Raises NotifyError when it cannot go on."""
    if rate is not None and not rate > 0:
        raise NotifyError(f"The rate must be more than 0 messages per second, got {rate}.")
    histories = load_histories(read_source(manifest, timeout=10), manifest)
    for h in histories:
        for date in h.skipped:
            echo(f"warning: {h.id} change of {date} names no version the manifest lists; nobody is told about it.")
    result = NotifyResult()
    progress = _Progress(result, echo, progress_every)
    if dry_run:
        def count(view: LedgerView) -> None:
            with closing(_plan(view, histories, result, progress)) as planned:
                for _, p in planned:
                    if verbose:
                        echo(f"would notify {p.person.email}: {_label(p.notice)}")

        ledger.read(count)
        progress.planned(rate)
        return result
    # The plan file holds one line per person to write to: a policy's index and receipt ids (no address).
    with run_lock(ledger), tempfile.TemporaryFile("w+", encoding="utf-8") as plan_file:
        def write_plan(view: LedgerView) -> None:
            with closing(_plan(view, histories, result, progress)) as planned:
                for index, p in planned:
                    plan_file.write(json.dumps([index, p.person.receipt_ids]) + "\n")

        ledger.read(write_plan)
        progress.planned(rate)
        if result.planned:
            plan_file.seek(0)
            _send(ledger, settings, histories, plan_file, result, _Pace(rate), verbose, echo, progress)
            progress.sending(final=True)
    return result


def _send(ledger: LedgerStore, settings: Settings, histories: list[PolicyHistory], plan_file: IO[str], result: NotifyResult,
          pace: _Pace, verbose: bool, echo: Callable[[str], None], progress: _Progress) -> None:
    key = keys.load(settings).signing
    in_a_row = 0
    with _Connections(settings) as smtp:
        for line in plan_file:
            index, receipt_ids = json.loads(line)
            history = histories[index]
            pace.wait()
            # The plan is one snapshot and sending takes hours: re-read this person, and plan them again, first.
            now = ledger.read(lambda view: subscribers.of_receipts(view, history.id, tuple(receipt_ids)))
            p = None if now is None else plan_person(history, now)
            if p is None:
                result.skipped += 1
                if verbose:
                    who = now.email if now is not None else f"receipt {receipt_ids[0]}"
                    echo(f"skipped {who}: withdrew, stopped e-mails, was erased, agreed or was told since the plan")
            else:
                pace.started()
                try:
                    msg = notice_message(settings, to=p.person.email, notice=p.notice, earlier=p.earlier,
                                         **_links(key, settings, p, time.time()))
                    smtp.session().send(msg)
                except MailError as e:
                    smtp.reset()
                    result.failed += 1
                    in_a_row += 1
                    echo(f"failed {p.person.email}: {e}")
                    if in_a_row >= MAX_FAILURES_IN_A_ROW:
                        result.stopped = f"{in_a_row} messages in a row failed (the last: {str(e).rstrip('.')})"
                        return
                else:
                    _record(ledger, p)  # LedgerUnavailable stops the run: never send what we cannot record
                    result.sent += 1
                    in_a_row = 0
                    if verbose:
                        echo(f"sent {p.person.email}: {_label(p.notice)}")
            progress.sending()


@contextmanager
def run_lock(ledger: LedgerStore) -> Iterator[None]:
    """One notify run at a time per ledger: two runs planning from one snapshot would both send.

    The lock is a row in the ledger's `meta` table naming the process, taken in one write transaction;
    a run killed without releasing it is detected (its process is gone) and the lock is taken over.
    """
    mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()})
    with ledger.transaction() as txn:
        held = txn.meta_get("notify_run")
        if held is not None and _alive(json.loads(held)):
            other = json.loads(held)
            raise NotifyError(
                f"Another notify run (process {other['pid']} on {other['host']}) is in progress; "
                "wait for it to finish, then run notify again."
            )
        txn.meta_set("notify_run", mine)
    try:
        yield
    finally:
        # If this fails (ledger gone read-only), the next run sees our process is gone and takes over.
        with suppress(LedgerError):
            with ledger.transaction() as txn:
                txn.meta_delete("notify_run", mine)


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
