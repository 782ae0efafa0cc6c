"""E-mail messages (address confirmation, change notice, access link) and their delivery over SMTP.

Messages are built with `email.message.EmailMessage` under the default policy, which refuses CR or LF
in a header value; we keep it that way. The only stored text that reaches a header is the recipient's
address, checked here again. The subject carries the policy title from our own manifest, with control
characters removed. Everything else stored (the change summary) goes only into the body, HTML-escaped
in the HTML part.
"""

from __future__ import annotations

import html
import re
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from form_handler.settings import Settings

# C0 and C1 control characters plus the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


class MailError(Exception):
    """A message cannot be built or delivered; one plain sentence.

    `permanent` is True when the server refused for good (a 5xx reply), so retrying cannot help.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class ChangeNotice:
    """One material change of one policy, as the manifest describes it."""

    policy_id: str
    title: str
    url: str  # relative to the site root, e.g. "privacy/"
    date: str
    effective: str
    summary: str
    version: str


def header_text(text: str, limit: int = 120) -> str:
    """Text safe for a header value: control characters become spaces, runs of spaces collapse."""
    return " ".join(_CONTROL.sub(" ", text).split())[:limit]


def body_text(text: str) -> str:
    """Body text with line endings normalised and other control characters removed."""
    return _BODY_CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def recipient(email: str) -> str:
    """The address as a header value, or MailError when it is not one plain address."""
    if _CONTROL.search(email):
        raise MailError("The e-mail address contains control characters; it cannot be written to.")
    try:
        address = Address(addr_spec=email.strip())
    except (ValueError, IndexError, HeaderParseError) as e:
        raise MailError(f"The e-mail address {email!r} is not valid: {e}.") from None
    if not address.username or not address.domain:
        raise MailError(f"The e-mail address {email!r} is not valid; it needs a name and a domain.")
    return address.addr_spec


def changes_url(settings: Settings, notice: ChangeNotice) -> str:
    return f"{settings.base_url}/{notice.url.lstrip('/')}changes/"


def _envelope(settings: Settings, to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = recipient(to)
    msg["Subject"] = header_text(subject, limit=200)
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    domain = settings.mail_from.rpartition("@")[2].strip(" >") or "localhost"
    msg["Message-ID"] = make_msgid(domain=domain)
    # Tell auto-responders not to answer (RFC 3834).
    msg["Auto-Submitted"] = "auto-generated"
    return msg


def _paragraphs_html(text: str) -> str:
    return "".join(
        f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n") if p.strip()
    )


def _link_html(url: str, label: str) -> str:
    return f'<p><a href="{html.escape(url, quote=True)}">{html.escape(label)}</a></p>'


def _html(title: str, inner: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"</head><body>{inner}</body></html>"
    )


MANAGE_LABEL = "See or change what you agreed to, or erase your data"


def manage_url(settings: Settings) -> str:
    """The manage-your-consent page (form_handler/web/selfservice_routes.py), linked from every e-mail."""
    return f"{settings.base_url}/api/manage"


def manage_line(settings: Settings) -> str:
    return f"{MANAGE_LABEL}: {manage_url(settings)}"


def access_message(settings: Settings, *, to: str, access_url: str) -> EmailMessage:
    """The answer to "what do you hold about me?": one signed link, to this address only, that lists its receipts."""
    msg = _envelope(settings, to, "The receipts we hold for your e-mail address")
    intro = ("Someone, probably you, asked on our site what we hold about this e-mail address. This link lists "
             "every receipt we hold for it, what each consented to and whether it still stands, and lets you "
             "withdraw your consent or erase your data:")
    after = "The link works for 24 hours. If you did not ask for this, ignore this message: nothing has changed."
    msg.set_content(f"Hello,\n\n{intro}\n\n{access_url}\n\n{after}\n\n{manage_line(settings)}\n")
    msg.add_alternative(
        _html("Your receipts", f"<p>Hello,</p><p>{html.escape(intro)}</p>"
              + _link_html(access_url, "See what you agreed to") + f"<p>{html.escape(after)}</p>"
              + _link_html(manage_url(settings), MANAGE_LABEL)),
        subtype="html",
    )
    return msg


def confirmation_message(settings: Settings, *, to: str, title: str, confirm_url: str, updates: bool,
                         third_parties: bool) -> EmailMessage:
    """The double opt-in mail: what the form asked for with this address, and one link that confirms it.

    Until the link is followed, neither change e-mails nor third-party sharing start; the mail says so,
    since the one who typed the address may not be its owner."""
    title = header_text(title) or "our policies"
    asked = [f"e-mail you when our {title} changes"] if updates else []
    asked += ["share your e-mail address with third parties"] if third_parties else []
    if updates and third_parties:
        subject = f"Please confirm: e-mails when our {title} changes, and sharing your address"
        not_done = "we will neither e-mail you about changes nor share your address"
    elif third_parties:
        subject = "Please confirm: sharing your e-mail address with third parties"
        not_done = "we will not share your address"
    else:
        subject = f"Please confirm: e-mails when our {title} changes"
        not_done = "we will not e-mail you about changes"
    msg = _envelope(settings, to, subject)
    intro = "This address was given on our feedback form, with a request that we:"
    ask = "None of this starts until you confirm that this address is yours and that you want it, by opening this link:"
    after = f"If you did not ask for this, ignore this message: {not_done}, and the link stops working after 14 days."
    listed = "\n".join(f"- {a}" for a in asked)
    msg.set_content(f"Hello,\n\n{intro}\n{listed}\n\n{ask}\n\n{confirm_url}\n\n{after}\n\n{manage_line(settings)}\n")
    msg.add_alternative(
        _html(
            "Please confirm",
            f"<p>Hello,</p><p>{html.escape(intro)}</p><ul>"
            + "".join(f"<li>{html.escape(a)}</li>" for a in asked)
            + f"</ul><p>{html.escape(ask)}</p>"
            + _link_html(confirm_url, "Yes, this is my address and I want this")
            + f"<p>{html.escape(after)}</p>"
            + _link_html(manage_url(settings), MANAGE_LABEL),
        ),
        subtype="html",
    )
    return msg


def notice_message(
    settings: Settings,
    *,
    to: str,
    notice: ChangeNotice,
    reconsent_url: str,
    withdraw_url: str,
    unsubscribe_url: str,
    earlier: tuple[ChangeNotice, ...] = (),
) -> EmailMessage:
    """The change notice: what changed, when it takes effect, and links to agree, withdraw or stop.

    `earlier` lists older changes the person has not been told about, so one message covers them all.
    """
    title = header_text(notice.title) or notice.policy_id
    msg = _envelope(settings, to, f"Our {title} changes on {header_text(notice.effective, 10)}")
    # RFC 2369 and RFC 8058: mail clients show an unsubscribe button that POSTs to this URL.
    msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    summary = body_text(notice.summary)
    changes = changes_url(settings, notice)
    facts = f"Changed on: {notice.date}\nTakes effect: {notice.effective}"
    intro = f"You asked us to e-mail you when our {title} changes. We have changed it."
    ask = "You may agree to the new version, or withdraw your consent."
    older = [f"{c.date} (in effect from {c.effective}): {body_text(c.summary)}" for c in earlier]
    older_text = "Earlier changes since you last agreed:\n" + "\n".join(f"- {o}" for o in older) + "\n\n" if older else ""
    older_html = (
        "<h2>Earlier changes since you last agreed</h2><ul>" + "".join(f"<li>{html.escape(o)}</li>" for o in older) + "</ul>"
        if older else ""
    )
    msg.set_content(
        f"Hello,\n\n{intro}\n\n{facts}\n\nWhat changed:\n{summary}\n\n{older_text}"
        f"Read the changes: {changes}\n\n{ask}\n\n"
        f"I agree to the new version: {reconsent_url}\n\n"
        f"I withdraw my consent: {withdraw_url}\n\n"
        f"Stop e-mails about changes: {unsubscribe_url}\n\n"
        f"{manage_line(settings)}\n"
    )
    msg.add_alternative(
        _html(
            title,
            f"<p>Hello,</p><p>{html.escape(intro)}</p>"
            f"<p>Changed on: {html.escape(notice.date)}<br>Takes effect: {html.escape(notice.effective)}</p>"
            f"<h2>What changed</h2>{_paragraphs_html(summary)}{older_html}"
            + _link_html(changes, "Read the changes")
            + f"<p>{html.escape(ask)}</p>"
            + _link_html(reconsent_url, "I agree to the new version")
            + _link_html(withdraw_url, "I withdraw my consent")
            + _link_html(unsubscribe_url, "Stop e-mails about changes")
            + _link_html(manage_url(settings), MANAGE_LABEL),
        ),
        subtype="html",
    )
    return msg


class SmtpSession:
    """One SMTP connection; `send` delivers one message to exactly one recipient."""

    def __init__(self, smtp: smtplib.SMTP) -> None:
        self._smtp = smtp

    def send(self, msg: EmailMessage) -> None:
        """Send, or raise MailError. The envelope names only the To address, never more."""
        to = recipient(str(msg["To"]))
        try:
            refused = self._smtp.send_message(msg, to_addrs=[to])
        except smtplib.SMTPRecipientsRefused as e:
            codes = [code for code, _ in e.recipients.values()]
            raise MailError(
                f"The mail server refused the recipient: {e.recipients}.", permanent=min(codes) >= 500
            ) from e
        except smtplib.SMTPResponseException as e:
            raise MailError(
                f"The mail server did not take the message: {e}.", permanent=e.smtp_code >= 500
            ) from e
        except (smtplib.SMTPException, OSError) as e:
            raise MailError(f"The mail server did not take the message: {e}.") from e
        if refused:
            raise MailError(f"The mail server refused the recipient: {refused}.")


@contextmanager
def smtp_session(settings: Settings, *, timeout: float = 30.0) -> Iterator[SmtpSession]:
    """Connect (STARTTLS and login when configured) or raise MailError naming the setting to check."""
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    except OSError as e:
        raise MailError(
            f"Cannot reach the mail server at {where} ({e}); check POLICY_SITE_SMTP_HOST and _PORT."
        ) from e
    try:
        try:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
        except (smtplib.SMTPException, OSError) as e:
            raise MailError(
                f"The mail server at {where} refused STARTTLS or login ({e}); "
                "check POLICY_SITE_SMTP_STARTTLS, _USER and _PASSWORD."
            ) from e
        yield SmtpSession(smtp)
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()
