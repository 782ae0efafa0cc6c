"""The self-service pages and the receipt file: a receipt as recorded, the confirming click, what was recorded.

Every value is printed by Jinja with autoescape (form_handler/web/pages.py renders them, into the site's shell
when there is one). The words for each action live here once, so the confirming page, the page after it
and the receipt file say the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.responses import HTMLResponse

from form_handler.consent.manifest import PolicyEntry
from form_handler.consent.selfservice import CONSENT_NAMES, ReceiptView
from form_handler.ledger.types import Entry
from form_handler.web import pages

MANAGE_PATH = f"{pages.API_ROOT}/manage"
ACCESS_PATH = f"{pages.API_ROOT}/access"
ACCESS_MAILS_PER_DAY = 3

# action -> (button on the receipt, what the confirming page says will be recorded, its button)
ASK = {
    "withdraw_contact": ("Withdraw my consent to be contacted",
                         "We will record a withdrawal of your consent to be contacted about your feedback: we will not "
                         "contact you about it. Your other choices on this receipt stay as they are.",
                         "Yes, withdraw that consent"),
    "stop_updates": ("Stop e-mails about changes",
                     "We will record that you no longer want e-mails when our policies change. Your other choices on "
                     "this receipt stay as they are.",
                     "Yes, stop the e-mails"),
    "withdraw_third_parties": ("Stop sharing my e-mail address",
                               "We will record a withdrawal of your consent to pass your e-mail address to third "
                               "parties: from then on we leave it out of the addresses we share. It cannot recall what "
                               "was shared before. Your other choices on this receipt stay as they are.",
                               "Yes, stop sharing it"),
    "withdraw": ("Withdraw every consent",
                 "We will record a withdrawal of every consent on this receipt. From then on we treat every choice you "
                 "made with it as not given: we will not contact you, e-mail you about changes or share your address "
                 "on the strength of it.",
                 "Yes, withdraw every consent"),
    "erase": ("Erase my e-mail address and message",
              "We will delete the e-mail address, the message and the page you sent it from, and record an erasure "
              "entry. The entry that records your choices stays, without them, so the ledger still proves what "
              "happened; an erased receipt no longer counts as consent to anything. This cannot be undone.",
              "Yes, erase them"),
}
# action -> (what was recorded, with {receipt}; what it means now)
DONE = {
    "withdraw_contact": ("We recorded a withdrawal of your consent to be contacted about your feedback (receipt "
                         "{receipt}).",
                         "We will not contact you about it. Your other choices on this receipt stand as before."),
    "stop_updates": ("We recorded that you want no more e-mails about changes to our policies (receipt {receipt}).",
                     "Your other choices on this receipt stand as before."),
    "withdraw_third_parties": ("We recorded a withdrawal of your consent to pass your e-mail address to third parties "
                               "(receipt {receipt}).",
                               "From now on we leave your address out of what we share. Your other choices on this "
                               "receipt stand as before."),
    "withdraw": ("We recorded a withdrawal of every consent on receipt {receipt}.",
                 "We treat every choice you made with it as not given."),
    "erase": ("We erased the e-mail address, the message and the page of receipt {receipt}, and recorded an erasure "
              "entry.",
              "We no longer hold them, and the receipt no longer counts as consent. The ledger keeps only the entries "
              "that say what you chose and when it was erased."),
}
DONE_ALREADY = "This was already recorded before, so nothing new was recorded."
# consent -> what the receipt's status says once that consent alone was withdrawn, with {at}
STOPPED = {
    "consent_contact": "Your consent to be contacted about your feedback was withdrawn at {at} (UTC).",
    "consent_updates": "E-mails about changes were stopped at {at} (UTC).",
    "consent_third_parties": "Your consent to pass your e-mail address to third parties was withdrawn at {at} (UTC).",
}


def _policy(view: ReceiptView, policy: PolicyEntry | None, site_url: str) -> dict[str, Any]:
    # As on the receipt page (pages.receipt_page): the title, and the URL of the exact version consented to.
    if policy is None:
        return {"policy_title": view.policy_id, "version_url": f"{site_url}/", "current": True}
    return {"policy_title": policy.title, "current": view.policy_version == policy.current,
            "version_url": f"{site_url}/{policy.versions.get(view.policy_version, policy.url)}"}


def status_sentence(view: ReceiptView) -> str:
    """Whether the receipt still stands, in one or two sentences."""
    if view.erased_at:
        return f"Erased at {view.erased_at} (UTC): we hold no e-mail address or message for it, and none of its choices count."
    if view.withdrawn_at:
        return f"Withdrawn at {view.withdrawn_at} (UTC): we treat every choice on it as not given."
    said = "Your choices stand as shown."
    for name, words in STOPPED.items():
        if name in view.stopped_at:
            said += " " + words.format(at=view.stopped_at[name])
    if view.email and (view.stands("consent_updates") or view.stands("consent_third_parties")) and not view.confirmed:
        said += " Your address is not confirmed yet: until the link in our confirmation e-mail is followed, we neither " \
                "e-mail you about changes nor share your address."
    return said


def receipt_facts(view: ReceiptView, policy: PolicyEntry | None, site_url: str) -> dict[str, Any]:
    """What receipt_view.html prints for one receipt."""
    return {
        "receipt_id": view.receipt_id, "recorded_at": view.recorded_at, "policy_version": view.policy_version,
        **_policy(view, policy, site_url),
        "email": view.email, "erased_at": view.erased_at, "message": view.message,
        "show_message": view.message is not None, "status": status_sentence(view),
        "consents": [{"name": CONSENT_NAMES[n], "given": "Yes" if view.consents[n] else "No",
                      "stands": "Yes" if view.stands(n) else "No"} for n in CONSENT_NAMES],
        "actions": [{"action": a, "button": ASK[a][0]} for a in view.available()],
    }


def manage_form(site_url: str, *, status: int = 200, error: str = "", receipt_id: str = "") -> HTMLResponse:
    """The entry page: receipt id and withdraw token (data-manage-form), and the access request (e-mail)."""
    return pages._page("manage.html", status, site_url, title="Manage your consent",
                       description="See what we recorded with your receipt, withdraw your consent or erase your data.",
                       error=error, receipt_id=receipt_id, per_day=ACCESS_MAILS_PER_DAY)


def receipts_page(views: Sequence[tuple[ReceiptView, PolicyEntry | None]], site_url: str, *, title: str, lead: str,
                  action_url: str, auth: dict[str, str], download: bool) -> HTMLResponse:
    """One or more receipts as recorded, each with the actions still open (and the receipt file, with a token)."""
    return pages._page("manage_receipt.html", 200, site_url, title=title, description="Your receipt as we recorded it.",
                       lead=lead, receipts=[receipt_facts(v, p, site_url) for v, p in views], action_url=action_url,
                       auth=auth, download=download)


def confirm_page(view: ReceiptView, action: str, site_url: str, *, action_url: str, auth: dict[str, str]) -> HTMLResponse:
    """The confirming click: what will be recorded, a button that records it, and a way back."""
    button, what, yes = ASK[action]
    return pages._page("confirm_action.html", 200, site_url, title=button, description="Confirm what you asked for.",
                       what=what, button=yes, receipt_id=view.receipt_id, action=action, action_url=action_url,
                       auth=auth)


def done_page(view: ReceiptView, action: str, entries: list[Entry], site_url: str, *, action_url: str,
              auth: dict[str, str]) -> HTMLResponse:
    """What was recorded, entry by entry (number, kind, time, hash), and what it means now."""
    recorded, meaning = DONE[action]
    return pages._page(
        "action_done.html", 200, site_url, title="Recorded" if entries else "Already recorded",
        description="What we recorded.", recorded=recorded.format(receipt=view.receipt_id) if entries else DONE_ALREADY,
        meaning=meaning, receipt_id=view.receipt_id, action_url=action_url, auth=auth,
        entries=[{"seq": e.seq, "kind": e.kind, "recorded_at": e.recorded_at, "entry_hash": e.entry_hash} for e in entries],
    )


ACCESS_ANSWER = (
    "If we hold this e-mail address, we have sent a link to it that lists every receipt we hold for it. The link "
    "works for 24 hours. If no e-mail arrives, we hold nothing under this address (or check your spam folder)."
)


def access_sent(site_url: str) -> HTMLResponse:
    """The one answer to every access request, whatever the address: nobody learns who is in the ledger."""
    return pages._page("access_sent.html", 200, site_url, title="Check your e-mail",
                       description="What happens after you asked what we hold about you.", answer=ACCESS_ANSWER)


def receipt_file(view: ReceiptView, policy: PolicyEntry | None, site_url: str, token: str) -> dict[str, Any]:
    """The receipt to keep, as JSON: the same facts as the receipt page, and how to withdraw."""
    facts = _policy(view, policy, site_url)
    return {
        "receipt_id": view.receipt_id,
        "recorded_at": view.recorded_at,
        "policy": {"id": view.policy_id, "title": facts["policy_title"], "version": view.policy_version,
                   "version_url": facts["version_url"]},
        "consents": {n: view.consents[n] for n in CONSENT_NAMES},
        "consent_names": dict(CONSENT_NAMES),
        "entry_hash": view.entry_hash,
        "status": status_sentence(view),
        "withdraw_token": token,
        "how_to_withdraw": (f"Open {site_url}{MANAGE_PATH}, enter the receipt_id and the withdraw_token from this file, "
                            "and choose what to withdraw or erase. Keep this file private: the token lets anyone "
                            "who has it withdraw or erase this consent."),
    }
