from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailserver import MailServer, body, free_port

from form_handler import keys, notify, subscribers, tokens
from form_handler.ledger import ConsentDraft, Ledger
from form_handler.settings import Settings

V1, V2, V3 = "1" * 64, "2" * 64, "3" * 64
CHANGE_2 = {"date": "2026-11-20", "effective": "2026-12-20", "summary": "Feedback is kept two years.", "material": True, "version": V2}


def write_manifest(path: Path, changes: list[dict[str, object]] | None = None, versions: tuple[str, ...] = (V1, V2)) -> str:
    effective = {V1: "2026-01-01", V2: "2026-12-20", V3: "2027-03-01"}
    doc = {"policies": [{
        "id": "privacy", "title": "Privacy Policy", "url": "privacy/", "version": versions[-1],
        "changes": changes if changes is not None else [CHANGE_2],
        "versions": [{"version": v, "effective": effective[v], "url": f"privacy/versions/{effective[v]}/",
                      "current": v == versions[-1]} for v in versions],
    }]}
    path.write_text(json.dumps(doc))
    return str(path)


def consent(led: Ledger, email: str | None, *, version: str = V1, updates: bool = True, confirm: bool = True) -> str:
    draft = ConsentDraft("privacy", version, "/feedback/", "hello", email, False, updates, False)
    with led.transaction() as txn:
        receipt = txn.append_consent(draft)
        if confirm:
            txn.append("confirmation", receipt.receipt_id, policy_id="privacy")
    return receipt.receipt_id


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


@pytest.fixture
def led(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        yield ledger


def settings_for(port: int) -> Settings:
    return Settings(smtp_host="127.0.0.1", smtp_port=port, base_url="https://example.org", secret="s")


def run(led: Ledger, smtp: MailServer, manifest: str, **kw: bool) -> notify.NotifyResult:
    return notify.run(led, settings_for(smtp.port), manifest, echo=lambda s: None, **kw)


def notice_count(led: Ledger) -> int:
    count: int = led.connection.execute("SELECT count(*) FROM entries WHERE kind = 'notice'").fetchall()[0][0]  # type: ignore[assignment]
    return count


def test_notify_writes_only_to_confirmed_subscribers_on_an_older_version(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    consent(led, "dan@example.com", updates=False)
    consent(led, "erin@example.com", confirm=False)
    consent(led, "fay@example.com", version=V2)
    consent(led, None, updates=False)
    result = run(led, smtp, write_manifest(tmp_path / "m.json"))
    assert result.sent == ["ann@example.com"] and smtp.recipients() == ["ann@example.com"]


def test_notify_skips_withdrawn_and_erased_people(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    led.erase(consent(led, "bob@example.com"))
    with led.transaction() as txn:
        receipt = txn.append_consent(ConsentDraft("privacy", V1, "/", "x", "carl@example.com", False, True, False))
        txn.append("confirmation", receipt.receipt_id, policy_id="privacy")
    led.withdraw(receipt.receipt_id, receipt.withdraw_token)
    assert subscribers.people(led.connection, "privacy") == []
    assert run(led, smtp, write_manifest(tmp_path / "m.json")).sent == [] and smtp.messages == []


def test_notify_sends_one_mail_for_two_submissions_from_one_address(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "Gus@Example.com")
    consent(led, "gus@example.com")
    run(led, smtp, write_manifest(tmp_path / "m.json"))
    assert len(smtp.messages) == 1 and smtp.received[0].rcpt_tos == ["gus@example.com"]


def test_an_unconfirmed_submission_on_a_newer_version_does_not_stop_her_notices(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    mine = consent(led, "ann@example.com")
    consent(led, "ANN@example.com", version=V2, updates=False, confirm=False)  # anyone can type her address
    (ann,) = subscribers.people(led.connection, "privacy")
    assert (ann.latest_version, ann.latest_receipt_id, ann.agreed, ann.subscribed) == (V1, mine, {V1}, True)
    assert run(led, smtp, write_manifest(tmp_path / "m.json")).sent == ["ann@example.com"]
    assert smtp.recipients() == ["ann@example.com"]


def test_notify_skips_people_who_stopped_updates(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    rid = consent(led, "ann@example.com")
    with led.transaction() as txn:
        txn.append("withdrawal", rid, consent_updates=False)
    assert run(led, smtp, write_manifest(tmp_path / "m.json")).sent == []
    assert led.status(rid).standing  # stopping e-mails withdraws nothing else


def test_notify_rereads_each_person_before_sending(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    bob, carl, dan = consent(led, "bob@example.com"), consent(led, "carl@example.com"), consent(led, "dan@example.com")

    def meanwhile(line: str) -> None:  # echo runs between two sends: people change their minds mid-run
        if line.startswith("sent ann@"):
            led.erase(bob)
            with led.transaction() as txn:
                txn.append("withdrawal", carl)  # no flags: every consent withdrawn
                txn.append("withdrawal", dan, consent_updates=False)  # the unsubscribe link

    result = notify.run(led, settings_for(smtp.port), write_manifest(tmp_path / "m.json"), echo=meanwhile)
    assert result.sent == ["ann@example.com"] and smtp.recipients() == ["ann@example.com"]
    assert result.skipped == ["bob@example.com", "carl@example.com", "dan@example.com"] and notice_count(led) == 1


def test_notify_records_each_notice_and_sends_nothing_twice(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com"), consent(led, "bob@example.com")
    manifest = write_manifest(tmp_path / "m.json")
    assert len(run(led, smtp, manifest).sent) == 2
    assert run(led, smtp, manifest).sent == [] and notice_count(led) == 2
    assert len(smtp.messages) == 2 and led.verify().ok


def test_notify_dry_run_sends_and_records_nothing(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    lines: list[str] = []
    notify.run(led, settings_for(smtp.port), write_manifest(tmp_path / "m.json"), dry_run=True, echo=lines.append)
    assert lines == ["would notify ann@example.com: privacy change of 2026-11-20"]
    assert smtp.messages == [] and notice_count(led) == 0


def test_notify_after_reconsent_to_the_new_version_sends_nothing(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    rid = consent(led, "ann@example.com")
    with led.transaction() as txn:
        txn.append("reconsent", rid, policy_id="privacy", policy_version=V2)
    assert run(led, smtp, write_manifest(tmp_path / "m.json")).sent == []


def test_notify_matches_a_change_without_version_by_effective_date(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    change = {k: v for k, v in CHANGE_2.items() if k != "version"}
    assert run(led, smtp, write_manifest(tmp_path / "m.json", [change])).sent == ["ann@example.com"]
    assert led.connection.execute("SELECT policy_version FROM entries WHERE kind = 'notice'").fetchall()[0][0] == V2


def test_notify_covers_two_pending_changes_in_one_message(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    change_3 = {"date": "2027-02-01", "effective": "2027-03-01", "summary": "New processor.", "material": True, "version": V3}
    run(led, smtp, write_manifest(tmp_path / "m.json", [change_3, CHANGE_2], (V1, V2, V3)))
    (msg,) = smtp.messages
    text = body(msg)
    assert "2027-03-01" in msg["Subject"] and "New processor." in text and "Feedback is kept two years." in text
    assert notice_count(led) == 2


def test_notice_links_are_signed_for_the_receipt_and_new_version(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    rid = consent(led, "ann@example.com")
    run(led, smtp, write_manifest(tmp_path / "m.json"))
    (msg,) = smtp.messages
    url = msg["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://example.org/api/unsubscribe?token=")
    claim = tokens.verify(keys.from_secret("s"), url.split("token=")[1], "unsubscribe", now=time.time())
    assert (claim.receipt_id, claim.version) == (rid, V2)


def test_notify_records_nothing_when_the_server_is_down(led: Ledger, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    result = notify.run(led, settings_for(free_port()), write_manifest(tmp_path / "m.json"), echo=lambda s: None)
    assert result.failed == ["ann@example.com"] and notice_count(led) == 0


def test_notify_killed_mid_run_resends_at_most_the_message_in_flight(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    emails = [f"p{i}@example.com" for i in range(6)]
    for e in emails:
        consent(led, e)
    manifest = write_manifest(tmp_path / "m.json")
    env = {**os.environ, "POLICY_SITE_LEDGER": str(led.path), "POLICY_SITE_SMTP_HOST": "127.0.0.1",
           "POLICY_SITE_SMTP_PORT": str(smtp.port), "POLICY_SITE_SECRET": "s"}
    smtp.hold_after(2)  # the third message is taken but never answered: "sent, not recorded"
    proc = subprocess.Popen([sys.executable, "-c", "from form_handler.cli import main; main()", "notify", "--manifest", manifest], env=env)
    smtp.wait_for(3, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    smtp.release()
    assert notice_count(led) == 2
    subprocess.run([sys.executable, "-c", "from form_handler.cli import main; main()", "notify", "--manifest", manifest], env=env, check=True, timeout=60)
    got = smtp.recipients()
    assert sorted(set(got)) == emails and len(got) == 7  # the one in flight went out twice, nobody else did
    assert notice_count(led) == 6 and led.verify().ok


def test_notify_command_dry_run_prints_addresses_and_exits_zero(led: Ledger, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from form_handler.cli import cli

    consent(led, "ann@example.com")
    result = CliRunner().invoke(cli, ["notify", "--ledger", str(led.path), "--manifest", write_manifest(tmp_path / "m.json"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would notify ann@example.com: privacy change of 2026-11-20" in result.output
    assert "1 would be notified" in result.output and notice_count(led) == 0


def test_notify_refuses_to_run_beside_another_run(led: Ledger, smtp: MailServer, tmp_path: Path) -> None:
    consent(led, "ann@example.com")
    with notify.run_lock(led.connection):
        with pytest.raises(notify.NotifyError, match="Another notify run"):
            run(led, smtp, write_manifest(tmp_path / "m.json"))
    assert smtp.messages == [] and len(run(led, smtp, write_manifest(tmp_path / "m.json")).sent) == 1
