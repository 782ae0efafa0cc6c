from __future__ import annotations


import pytest
from mailserver import MailServer, body, free_port

from form_handler.mail.message import (
    ChangeNotice,
    MailError,
    confirmation_message,
    notice_message,
    recipient,
    smtp_session,
)
from form_handler.settings import Settings

NOTICE = ChangeNotice(
    policy_id="privacy",
    title="Privacy Policy",
    url="privacy/",
    date="2026-11-20",
    effective="2026-12-20",
    summary="We now keep feedback for <b>two</b> years.\n\nNothing else changed.",
    version="ab" * 32,
)


def settings_for(port: int) -> Settings:
    return Settings(smtp_host="127.0.0.1", smtp_port=port, base_url="https://example.org")


def notice_to(to: str, notice: ChangeNotice = NOTICE, settings: Settings | None = None):  # type: ignore[no-untyped-def]
    return notice_message(
        settings or settings_for(25), to=to, notice=notice,
        reconsent_url="https://example.org/api/reconsent?token=R",
        withdraw_url="https://example.org/api/withdraw-consent?token=W",
        unsubscribe_url="https://example.org/api/unsubscribe?token=U",
    )


def test_notice_message_carries_the_change_and_every_link() -> None:
    msg = notice_to("ann@example.com")
    text = body(msg)
    assert "Privacy Policy" in msg["Subject"] and "2026-12-20" in msg["Subject"]
    assert "Changed on: 2026-11-20" in text and "Takes effect: 2026-12-20" in text
    assert "two</b> years" in text
    assert "https://example.org/privacy/changes/" in text
    for token in ("token=R", "token=W", "token=U"):
        assert token in text


def test_notice_message_has_one_click_unsubscribe_headers() -> None:
    msg = notice_to("ann@example.com")
    assert msg["List-Unsubscribe"] == "<https://example.org/api/unsubscribe?token=U>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["To"] == "ann@example.com" and len(msg.get_all("To")) == 1
    assert msg.get("Cc") is None and msg.get("Bcc") is None


def test_notice_html_part_escapes_the_summary() -> None:
    html_part = body(notice_to("ann@example.com"), "html")
    assert "&lt;b&gt;two&lt;/b&gt;" in html_part and "<b>two</b>" not in html_part
    assert 'href="https://example.org/api/unsubscribe?token=U"' in html_part


def test_title_with_crlf_cannot_inject_a_header() -> None:
    evil = ChangeNotice(**{**NOTICE.__dict__, "title": "Privacy\r\nBcc: victim@evil.test\r\n"})
    msg = notice_to("ann@example.com", evil)
    raw = msg.as_bytes()
    assert b"\nBcc:" not in raw and msg.get("Bcc") is None
    assert msg["Subject"].startswith("Our Privacy Bcc: victim@evil.test changes")


@pytest.mark.parametrize(
    "bad", ["ann@example.com\r\nBcc: x@evil.test", "ann@example.com, bob@example.com", "not an address", "@x"]
)
def test_recipient_refuses_anything_but_one_address(bad: str) -> None:
    with pytest.raises(MailError):
        recipient(bad)


def test_confirmation_message_links_to_the_confirm_url() -> None:
    msg = confirmation_message(
        settings_for(25), to="ann@example.com", title="Privacy\nPolicy", confirm_url="https://x/api/confirm?token=C",
        updates=True, third_parties=False,
    )
    assert msg["Subject"] == "Please confirm: e-mails when our Privacy Policy changes"
    assert "https://x/api/confirm?token=C" in body(msg)
    assert "token=C" in body(msg, "html")


@pytest.mark.parametrize(("updates", "third", "subject"), [
    (True, False, "Please confirm: e-mails when our Privacy Policy changes"),
    (False, True, "Please confirm: sharing your e-mail address with third parties"),
    (True, True, "Please confirm: e-mails when our Privacy Policy changes, and sharing your address"),
])
def test_confirmation_message_says_what_confirming_starts(updates: bool, third: bool, subject: str) -> None:
    msg = confirmation_message(settings_for(25), to="ann@example.com", title="Privacy Policy",
                               confirm_url="https://x/api/confirm?token=C", updates=updates, third_parties=third)
    text, html_part = body(msg), body(msg, "html")
    assert msg["Subject"] == subject and "None of this starts until you confirm" in text
    for asked, wanted in (("- e-mail you when our Privacy Policy changes", updates),
                          ("- share your e-mail address with third parties", third)):
        assert (asked in text) is wanted and (f"<li>{asked[2:]}</li>" in html_part) is wanted


def test_smtp_session_delivers_to_exactly_one_recipient(smtp: MailServer) -> None:
    with smtp_session(settings_for(smtp.port)) as session:
        session.send(notice_to("ann@example.com"))
    smtp.wait_for(1)
    (got,) = smtp.received
    assert got.rcpt_tos == ["ann@example.com"] and got.mail_from == "policies@localhost"
    assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert got.message.get_body(("html",)) is not None


def test_smtp_session_names_the_setting_when_the_server_is_down() -> None:
    with pytest.raises(MailError, match="POLICY_SITE_SMTP_HOST"):
        with smtp_session(settings_for(free_port()), timeout=2):
            pass


def test_summary_with_crlf_stays_in_the_body(smtp: MailServer) -> None:
    evil = ChangeNotice(**{**NOTICE.__dict__, "summary": "Fine.\r\nBcc: victim@evil.test\r\n\r\nX-Evil: 1"})
    with smtp_session(settings_for(smtp.port)) as session:
        session.send(notice_to("ann@example.com", evil))
    smtp.wait_for(1)
    (got,) = smtp.received
    assert got.rcpt_tos == ["ann@example.com"]
    assert got.message.get("Bcc") is None and got.message.get("X-Evil") is None
    assert "Bcc: victim@evil.test" in body(got.message)
