from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from ledger_helpers import sql
from mailserver import MailServer, body, free_port

from form_handler.consent import keys

from form_handler.mail import notify

from form_handler.consent import subscribers

from form_handler.consent import tokens
from form_handler.ledger.contract import LedgerStore
from form_handler.ledger.sqlite.store import ConsentDraft, Ledger
from form_handler.settings import Settings

V1, V2, V3 = "1" * 64, "2" * 64, "3" * 64
CHANGE_2 = {"date": "2026-11-20", "effective": "2026-12-20", "summary": "Feedback is kept two years.", "material": True, "version": V2}


def write_manifest(path: Path, changes: list[dict[str, object]] | None = None, versions: tuple[str, ...] = (V1, V2),
                   policy: str = "privacy") -> str:
    effective = {V1: "2026-01-01", V2: "2026-12-20", V3: "2027-03-01"}
    doc = {"policies": [{
        "id": policy, "title": "Privacy Policy", "url": f"{policy}/", "version": versions[-1],
        "changes": changes if changes is not None else [CHANGE_2],
        "versions": [{"version": v, "effective": effective[v], "url": f"privacy/versions/{effective[v]}/",
                      "current": v == versions[-1]} for v in versions],
    }]}
    path.write_text(json.dumps(doc))
    return str(path)


def consent(led: LedgerStore, email: str | None, *, version: str = V1, updates: bool = True, confirm: bool = True) -> str:
    draft = ConsentDraft("privacy", version, "/feedback/", "hello", email, False, updates, False)
    with led.transaction() as txn:
        receipt = txn.append_consent(draft)
        if confirm:
            txn.append("confirmation", receipt.receipt_id, policy_id="privacy")
    return receipt.receipt_id


@pytest.fixture
def led(store: LedgerStore) -> LedgerStore:
    """Each notify test runs on both backends (conftest.ledger_location)."""
    return store


@pytest.fixture
def sqlite_led(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        yield ledger


def settings_for(port: int) -> Settings:
    return Settings(smtp_host="127.0.0.1", smtp_port=port, base_url="https://example.org", secret="s")


def run(led: LedgerStore, smtp: MailServer, manifest: str, **kw: bool) -> notify.NotifyResult:
    return notify.run(led, settings_for(smtp.port), manifest, echo=lambda s: None, **kw)


def notice_count(led: LedgerStore) -> int:
    count: int = sql(led, "SELECT count(*) FROM entries WHERE kind = 'notice'")[0][0]
    return count


def test_notify_writes_only_to_confirmed_subscribers_on_an_older_version(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    consent(led, "dan@example.com", updates=False)
    consent(led, "erin@example.com", confirm=False)
    consent(led, "fay@example.com", version=V2)
    consent(led, None, updates=False)
    result = run(led, smtp, write_manifest(tmp_path / "m.json"))
    assert result.sent == 1 and smtp.recipients() == ["ann@example.com"]


def test_notify_skips_withdrawn_and_erased_people(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    led.erase(consent(led, "bob@example.com"))
    with led.transaction() as txn:
        receipt = txn.append_consent(ConsentDraft("privacy", V1, "/", "x", "carl@example.com", False, True, False))
        txn.append("confirmation", receipt.receipt_id, policy_id="privacy")
    led.withdraw(receipt.receipt_id, receipt.withdraw_token)
    assert led.read(lambda v: subscribers.people(v, "privacy")) == []
    assert run(led, smtp, write_manifest(tmp_path / "m.json")).sent == 0 and smtp.messages == []


def test_notify_sends_one_mail_for_two_submissions_from_one_address(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "Gus@Example.com")
    consent(led, "gus@example.com")
    run(led, smtp, write_manifest(tmp_path / "m.json"))
    assert len(smtp.messages) == 1 and smtp.received[0].rcpt_tos == ["gus@example.com"]


def test_an_unconfirmed_submission_on_a_newer_version_does_not_stop_her_notices(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    mine = consent(led, "ann@example.com")
    consent(led, "ANN@example.com", version=V2, updates=False, confirm=False)  # anyone can type her address
    (ann,) = led.read(lambda v: subscribers.people(v, "privacy"))
    assert (ann.latest_version, ann.latest_receipt_id, ann.agreed, ann.subscribed) == (V1, mine, {V1}, True)
    assert run(led, smtp, write_manifest(tmp_path / "m.json")).sent == 1
    assert smtp.recipients() == ["ann@example.com"]


def test_notify_skips_people_who_stopped_updates(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    rid = consent(led, "ann@example.com")
    with led.transaction() as txn:
        txn.append("withdrawal", rid, consent_updates=False)
    assert run(led, smtp, write_manifest(tmp_path / "m.json")).sent == 0
    assert led.status(rid).standing  # stopping e-mails withdraws nothing else


def test_notify_rereads_each_person_before_sending(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    bob, carl, dan = consent(led, "bob@example.com"), consent(led, "carl@example.com"), consent(led, "dan@example.com")

    def meanwhile(line: str) -> None:  # echo runs between two sends: people change their minds mid-run
        if line.startswith("sent ann@"):
            led.erase(bob)
            with led.transaction() as txn:
                txn.append("withdrawal", carl)  # no flags: every consent withdrawn
                txn.append("withdrawal", dan, consent_updates=False)  # the unsubscribe link

    result = notify.run(led, settings_for(smtp.port), write_manifest(tmp_path / "m.json"), verbose=True, echo=meanwhile)
    assert result.sent == 1 and smtp.recipients() == ["ann@example.com"]
    assert (result.planned, result.skipped) == (4, 3) and notice_count(led) == 1


def test_notify_records_each_notice_and_sends_nothing_twice(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com"), consent(led, "bob@example.com")
    manifest = write_manifest(tmp_path / "m.json")
    assert run(led, smtp, manifest).sent == 2
    again = run(led, smtp, manifest)
    assert (again.planned, again.sent, again.told_before) == (0, 0, 2) and notice_count(led) == 2
    assert len(smtp.messages) == 2 and led.verify().ok


def test_notify_dry_run_sends_and_records_nothing(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    lines: list[str] = []
    manifest = write_manifest(tmp_path / "m.json")
    notify.run(led, settings_for(smtp.port), manifest, dry_run=True, verbose=True, echo=lines.append)
    assert lines[0] == "would notify ann@example.com: privacy change of 2026-11-20"
    assert "  privacy change of 2026-11-20: 1" in lines
    assert smtp.messages == [] and notice_count(led) == 0


def test_notify_after_reconsent_to_the_new_version_sends_nothing(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    rid = consent(led, "ann@example.com")
    with led.transaction() as txn:
        txn.append("reconsent", rid, policy_id="privacy", policy_version=V2)
    assert run(led, smtp, write_manifest(tmp_path / "m.json")).sent == 0


def test_notify_matches_a_change_without_version_by_effective_date(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    change = {k: v for k, v in CHANGE_2.items() if k != "version"}
    assert run(led, smtp, write_manifest(tmp_path / "m.json", [change])).sent == 1
    assert sql(led, "SELECT policy_version FROM entries WHERE kind = 'notice'")[0][0] == V2


def test_notify_covers_two_pending_changes_in_one_message(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    change_3 = {"date": "2027-02-01", "effective": "2027-03-01", "summary": "New processor.", "material": True, "version": V3}
    run(led, smtp, write_manifest(tmp_path / "m.json", [change_3, CHANGE_2], (V1, V2, V3)))
    (msg,) = smtp.messages
    text = body(msg)
    assert "2027-03-01" in msg["Subject"] and "New processor." in text and "Feedback is kept two years." in text
    assert notice_count(led) == 2


def test_notice_links_are_signed_for_the_receipt_and_new_version(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    rid = consent(led, "ann@example.com")
    run(led, smtp, write_manifest(tmp_path / "m.json"))
    (msg,) = smtp.messages
    url = msg["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://example.org/api/unsubscribe?token=")
    claim = tokens.verify(keys.from_secret("s"), url.split("token=")[1], "unsubscribe", now=time.time())
    assert (claim.receipt_id, claim.version) == (rid, V2)


def test_notify_records_nothing_when_the_server_is_down(led: LedgerStore, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    result = notify.run(led, settings_for(free_port()), write_manifest(tmp_path / "m.json"), echo=lambda s: None)
    assert (result.failed, result.stopped) == (1, None) and notice_count(led) == 0


def notify_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from form_handler.cli import main; main()", "notify", *args]


def smtp_env(led: LedgerStore, smtp: MailServer) -> dict[str, str]:
    return {**os.environ, "POLICY_SITE_LEDGER": led.location, "POLICY_SITE_SMTP_HOST": "127.0.0.1",
            "POLICY_SITE_SMTP_PORT": str(smtp.port), "POLICY_SITE_SECRET": "s"}


def add_people(led: LedgerStore, n: int, *, policy: str = "privacy", prefix: str = "p") -> list[str]:
    """n confirmed subscribers on V1, written in batches through the ledger's own API."""
    emails = [f"{prefix}{i}@example.com" for i in range(n)]
    for start in range(0, n, 1000):
        with led.transaction() as txn:
            for email in emails[start:start + 1000]:
                r = txn.append_consent(ConsentDraft(policy, V1, "/feedback/", "hello", email, False, True, False))
                txn.append("confirmation", r.receipt_id, policy_id=policy)
    return emails


def test_notify_killed_mid_run_resends_at_most_the_message_in_flight(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    emails = add_people(led, 40)
    manifest, env = write_manifest(tmp_path / "m.json"), smtp_env(led, smtp)
    smtp.hold_after(15)  # the 16th message is taken but never answered: "sent, not recorded"
    proc = subprocess.Popen(notify_command("--manifest", manifest), env=env, stdout=subprocess.DEVNULL)
    smtp.wait_for(16, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    smtp.release()
    assert notice_count(led) == 15
    subprocess.run(notify_command("--manifest", manifest), env=env, check=True, timeout=60, stdout=subprocess.DEVNULL)
    per_recipient = Counter(smtp.recipients())
    in_flight = smtp.received[15].rcpt_tos[0]
    assert sorted(per_recipient) == sorted(emails) and per_recipient[in_flight] == 2  # it went out twice
    assert sum(per_recipient.values()) == 41 and notice_count(led) == 40 and led.verify().ok


def test_notify_killed_at_any_moment_sends_nobody_twice_but_the_one_in_flight(
        led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    emails = add_people(led, 60)
    manifest, env = write_manifest(tmp_path / "m.json"), smtp_env(led, smtp)
    proc = subprocess.Popen(notify_command("--manifest", manifest, "--rate", "100"), env=env, stdout=subprocess.DEVNULL)
    smtp.wait_for(20, timeout=30)  # no hold: the kill lands wherever the run happens to be
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    first = len(smtp.recipients())
    assert 20 <= first < 60 and notice_count(led) in (first - 1, first)
    subprocess.run(notify_command("--manifest", manifest), env=env, check=True, timeout=60, stdout=subprocess.DEVNULL)
    per_recipient = Counter(smtp.recipients())
    assert sorted(per_recipient) == sorted(emails) and sum(per_recipient.values()) - 60 <= 1
    assert max(per_recipient.values()) <= 2 and notice_count(led) == 60 and led.verify().ok


def test_notify_command_dry_run_prints_addresses_and_exits_zero(led: LedgerStore, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from form_handler.cli import cli

    consent(led, "ann@example.com")
    args = ["notify", "--ledger", led.location, "--manifest", write_manifest(tmp_path / "m.json"), "--dry-run"]
    quiet, verbose = CliRunner().invoke(cli, args), CliRunner().invoke(cli, [*args, "--verbose"])
    assert quiet.exit_code == verbose.exit_code == 0, quiet.output + verbose.output
    assert "ann@example.com" not in quiet.output and "privacy change of 2026-11-20: 1" in quiet.output
    assert "would notify ann@example.com: privacy change of 2026-11-20" in verbose.output
    assert "1 would be notified" in quiet.output and notice_count(led) == 0


def test_notify_refuses_to_run_beside_another_run(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    with notify.run_lock(led):
        with pytest.raises(notify.NotifyError, match="Another notify run"):
            run(led, smtp, write_manifest(tmp_path / "m.json"))
    assert smtp.messages == [] and run(led, smtp, write_manifest(tmp_path / "m.json")).sent == 1


def test_each_person_finds_the_same_people_as_reading_everyone(led: LedgerStore) -> None:
    ann = consent(led, "ann@example.com")
    consent(led, "ANN@example.com ", version=V2, updates=False, confirm=False)  # a claim, not confirmed
    consent(led, "bob@example.com", confirm=False)
    led.erase(consent(led, "carl@example.com"))
    dan = consent(led, "dan@example.com")
    with led.transaction() as txn:
        txn.append("withdrawal", dan, consent_updates=False)
        txn.append("reconsent", ann, policy_id="privacy", policy_version=V2)
        txn.append("notice", ann, policy_id="privacy", policy_version=V2, change_date="2026-11-20", effective="2026-12-20")
    consent(led, "erin@example.com"), consent(led, "Erin@Example.com", version=V2)
    everyone = sorted(led.read(lambda v: subscribers.people(v, "privacy")), key=lambda p: p.key)
    assert led.read(lambda v: list(subscribers.each_person(v, "privacy"))) == everyone
    assert [p.key for p in everyone] == ["ann@example.com", "dan@example.com", "erin@example.com"]


def test_notify_rate_paces_the_messages(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    add_people(led, 10)
    started = time.monotonic()
    result = notify.run(led, settings_for(smtp.port), write_manifest(tmp_path / "m.json"), rate=20, echo=lambda s: None)
    assert result.sent == 10 and time.monotonic() - started >= 0.45  # 9 gaps of 1/20 s


def test_notify_command_sends_unpaced_by_default(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from form_handler.cli import cli

    add_people(led, 10)
    args = ["notify", "--ledger", led.location, "--manifest", write_manifest(tmp_path / "m.json")]
    env = {"POLICY_SITE_SMTP_HOST": "127.0.0.1", "POLICY_SITE_SMTP_PORT": str(smtp.port), "POLICY_SITE_SECRET": "s"}
    assert "at most 20 messages per second" in CliRunner().invoke(cli, [*args, "--dry-run", "--rate", "20"]).output
    started = time.monotonic()
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0 and "10 notified, 0 failed." in result.output, result.output
    assert "per second" not in result.output and time.monotonic() - started < 2  # paced at 5/s: 1.8 s of waits alone


def test_notify_command_refuses_a_rate_of_zero(led: LedgerStore, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from form_handler.cli import cli

    result = CliRunner().invoke(cli, ["notify", "--ledger", led.location, "--manifest", str(tmp_path / "m.json"), "--rate", "0"])
    assert result.exit_code == 2 and "--rate" in result.output


def test_notify_prints_progress_and_failures_but_not_every_person(led: LedgerStore, smtp: MailServer, tmp_path: Path) -> None:
    add_people(led, 3)
    smtp.refuse("p1@example.com")
    lines: list[str] = []
    result = notify.run(led, settings_for(smtp.port), write_manifest(tmp_path / "m.json"), echo=lines.append, progress_every=0)
    assert (result.sent, result.failed) == (2, 1)
    assert [ln for ln in lines if "@" in ln] == [ln for ln in lines if ln.startswith("failed p1@example.com: ")] != []
    assert "progress: 2 of 3 done (1 sent, 0 skipped, 1 failed)" in "\n".join(lines)
    assert lines[-1].startswith("finished 3 of 3 in ") and lines[-1].endswith(": 2 sent, 0 skipped, 1 failed")


def test_notify_stops_when_the_server_keeps_failing_and_the_next_run_resumes(led: LedgerStore, tmp_path: Path) -> None:
    add_people(led, notify.MAX_FAILURES_IN_A_ROW + 5)
    port, manifest = free_port(), write_manifest(tmp_path / "m.json")
    result = notify.run(led, settings_for(port), manifest, echo=lambda s: None)  # nobody listens on the port
    assert (result.failed, result.not_tried) == (notify.MAX_FAILURES_IN_A_ROW, 5) and result.stopped
    with MailServer(port) as smtp:
        again = notify.run(led, settings_for(port), manifest, echo=lambda s: None)
    assert again.sent == len(set(smtp.recipients())) == notify.MAX_FAILURES_IN_A_ROW + 5 and again.stopped is None


def test_notify_holds_no_read_snapshot_while_sending(sqlite_led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    led = sqlite_led
    add_people(led, 3)
    checkpoints: list[tuple[int, int, int]] = []

    def meanwhile(line: str) -> None:  # the service writes and checkpoints while the campaign runs
        if line.startswith("sent "):
            other = apsw.Connection(str(led.path))
            consent(led, "late@example.com", version=V2)
            checkpoints.append(other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0])
            other.close()

    notify.run(led, settings_for(smtp.port), write_manifest(tmp_path / "m.json"), verbose=True, echo=meanwhile)
    assert checkpoints == [(0, 0, 0)] * 3  # not busy: the WAL went back to its start each time


def dry_run_peak(path: Path, manifest: str) -> tuple[int, int]:
    """People planned by `notify --dry-run`, and the peak of Python memory from its first person to its end."""
    first: list[str] = []

    def echo(line: str) -> None:  # leave out what comes before the people (reading the manifest: 5 MB)
        if not first:
            first.append(line)
            tracemalloc.reset_peak()

    with Ledger(path, readonly=True) as led:
        tracemalloc.start()
        try:
            planned = notify.run(led, settings_for(free_port()), manifest, dry_run=True, echo=echo, progress_every=0).planned
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert first[0].startswith("planning: 1 confirmed addresses read")
    return planned, peak


@pytest.fixture(scope="module")
def crowd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ledger: 2,000 subscribers of policy "small" and 20,000 of "privacy"."""
    path = tmp_path_factory.mktemp("crowd") / "ledger.sqlite3"
    with Ledger(path) as led:
        add_people(led, 2_000, policy="small", prefix="s")
        add_people(led, 20_000)
    return path


def test_notify_plans_in_memory_independent_of_the_number_of_people(crowd: Path, tmp_path: Path) -> None:
    small = dry_run_peak(crowd, write_manifest(tmp_path / "small.json", policy="small"))
    large = dry_run_peak(crowd, write_manifest(tmp_path / "large.json"))
    assert (small[0], large[0]) == (2_000, 20_000)
    assert large[1] < 2 * small[1] + 100_000  # ten times the people, about the same memory
    with Ledger(crowd, readonly=True) as led:  # what holding everyone takes: every receipt in one dict
        tracemalloc.start()
        try:
            led.read(lambda v: subscribers.people(v, "privacy"))
            everyone = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert large[1] * 20 < everyone, (large[1], everyone)


def test_versions_of_one_day_are_ranked_in_the_manifests_order_newest_listed_first() -> None:
    # Three texts took effect on one day (versions/2024-06-03/, -2/, -3/); the manifest lists them newest first.
    doc = {"policies": [{
        "id": "privacy", "title": "Privacy Policy", "url": "privacy/", "version": "c" * 64,
        "changes": [{"date": "2024-06-03", "effective": "2024-06-03", "summary": "Third.", "material": True}],
        "versions": [
            {"version": "c" * 64, "effective": "2024-06-03", "url": "privacy/", "current": True},
            {"version": "b" * 64, "effective": "2024-06-03", "url": "privacy/versions/2024-06-03-2/", "current": False},
            {"version": "a" * 64, "effective": "2024-06-03", "url": "privacy/versions/2024-06-03/", "current": False},
        ],
    }]}
    (history,) = notify.load_histories(json.dumps(doc).encode(), "policy-versions.json")
    assert history.versions == ("a" * 64, "b" * 64, "c" * 64)
    # A change without a version is tied to the newest text of its effective day.
    assert [c.version for c in history.changes] == ["c" * 64]
