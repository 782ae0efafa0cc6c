"""Who asked to hear about policy changes, read from the ledger: one `Person` per address and policy.

A person is an e-mail address, compared case-insensitively, with every receipt that carries it for one
policy. What counts, entry by entry (all chained, so the decision can be proven later):

- consent: the receipt and the version agreed to; `consent_updates` says whether they asked for mail;
- confirmation: the address was confirmed by following the double opt-in link. Only a confirmed
  receipt speaks for the address: anyone can type someone else's address into the form, so an
  unconfirmed one is kept as what it is (a claim) and changes nobody's version, subscription or
  sharing (form_handler/reports.py applies the same rule to the third-party export);
- reconsent: agreed to a newer version from a notice link;
- withdrawal: with no consent flag, every consent of the receipt is withdrawn; with
  `consent_updates: false` only the wish for e-mails about changes is;
- erasure: the address is gone, so the receipt cannot be matched to anyone any more;
- notice: a change notice about the version `policy_version` was sent.

The read works on any apsw connection, including the one inside a writer transaction, so a route can
decide ("was this link already used?") and record in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .addresses import email_key


@dataclass
class _Receipt:
    receipt_id: str
    email: str | None
    updates: bool = False
    confirmed: bool = False
    withdrawn: bool = False
    updates_withdrawn: bool = False
    erased: bool = False
    # (seq, version, recorded_at) of the consent and every reconsent, in ledger order
    agreed: list[tuple[int, str, str]] = field(default_factory=list)
    noticed: set[str] = field(default_factory=set)

    @property
    def standing(self) -> bool:
        return not (self.withdrawn or self.erased) and bool(self.email)


@dataclass(frozen=True)
class Person:
    """One address's standing with one policy: an address with at least one confirmed, standing receipt."""

    email: str
    policy_id: str
    # Every standing receipt (not withdrawn, not erased), confirmed or not: a withdraw link withdraws them all,
    # since withdrawing more than was confirmed is always safe.
    receipt_ids: tuple[str, ...]
    latest_receipt_id: str  # the confirmed receipt holding the latest agreement
    latest_version: str  # from confirmed receipts only
    latest_at: str  # when that agreement was recorded (ISO-8601 UTC)
    subscribed: bool  # a confirmed receipt asked for updates and they were not stopped
    confirmed: bool
    updates_receipt_ids: tuple[str, ...]  # standing receipts whose updates have not been stopped (to unsubscribe)
    noticed: frozenset[str]  # versions this address has already been told about
    agreed: frozenset[str]  # every version agreed to on a confirmed standing receipt (consent or reconsent)

    @property
    def key(self) -> str:
        return email_key(self.email)


def _receipts(connection: Any, policy_id: str, only: tuple[str, ...] | None = None) -> dict[str, _Receipt]:
    # Every entry of every receipt whose consent was for this policy (or of the receipts `only`), in chain order.
    sql = (
        "SELECT e.seq, e.kind, e.receipt_id, e.recorded_at, e.policy_version, e.consent_updates, p.email"
        " FROM entries e JOIN entries c ON c.receipt_id = e.receipt_id AND c.kind = 'consent'"
        " LEFT JOIN personal p ON p.receipt_id = e.receipt_id"
        " WHERE c.policy_id = ?"
    )
    if only is None:
        rows = connection.execute(sql + " ORDER BY e.seq", (policy_id,))
    else:
        # The receipt ids travel as one bound JSON array; the receipt index finds each one.
        sql += " AND e.receipt_id IN (SELECT value FROM json_each(?)) ORDER BY e.seq"
        rows = connection.execute(sql, (policy_id, json.dumps(list(only))))
    receipts: dict[str, _Receipt] = {}
    for seq, kind, receipt_id, recorded_at, version, updates, email in rows:
        r = receipts.setdefault(receipt_id, _Receipt(receipt_id, email))
        if kind == "consent":
            r.updates = bool(updates)
            r.agreed.append((seq, version, recorded_at))
        elif kind == "reconsent":
            r.agreed.append((seq, version, recorded_at))
        elif kind == "confirmation":
            r.confirmed = True
        elif kind == "withdrawal":
            if updates is None:
                r.withdrawn = True
            else:
                r.updates_withdrawn = True
        elif kind == "erasure":
            r.erased = True
        elif kind == "notice" and version:
            r.noticed.add(version)
    return receipts


def people(connection: Any, policy_id: str, *, only: tuple[str, ...] | None = None) -> list[Person]:
    """Every address with at least one confirmed, standing receipt for the policy, in order of first receipt.

    With `only`, just those receipts are read (a quick re-read of people already known)."""
    groups: dict[str, list[_Receipt]] = {}
    for r in _receipts(connection, policy_id, only).values():
        if r.email:
            groups.setdefault(email_key(r.email), []).append(r)
    out = []
    for receipts in groups.values():
        standing = [r for r in receipts if r.standing]
        # Only what the address's owner confirmed decides the version and the subscription: otherwise a
        # stranger's unconfirmed post of the address on a newer version would stop her change notices.
        confirmed = [r for r in standing if r.confirmed]
        if not confirmed:
            continue
        seq, version, at, holder = max((a + (r.receipt_id,) for r in confirmed for a in r.agreed))
        updates = [r for r in standing if r.updates and not r.updates_withdrawn]
        email = next(r.email for r in confirmed if r.receipt_id == holder)
        out.append(
            Person(
                email=(email or "").strip(),
                policy_id=policy_id,
                receipt_ids=tuple(r.receipt_id for r in standing),
                latest_receipt_id=holder,
                latest_version=version,
                latest_at=at,
                # The confirmation must be on a receipt that still asks for updates: after someone stopped
                # the e-mails, a new form post with their address must not sign them up again unconfirmed.
                subscribed=any(r.confirmed for r in updates),
                confirmed=True,
                updates_receipt_ids=tuple(r.receipt_id for r in updates),
                noticed=frozenset(v for r in receipts for v in r.noticed),
                agreed=frozenset(a[1] for r in confirmed for a in r.agreed),
            )
        )
    return out


def person_of(connection: Any, receipt_id: str) -> Person | None:
    """The person a receipt belongs to (by its address), or None when withdrawn, erased or unknown."""
    row = connection.execute(
        "SELECT c.policy_id, p.email FROM entries c LEFT JOIN personal p ON p.receipt_id = c.receipt_id"
        " WHERE c.receipt_id = ? AND c.kind = 'consent'",
        (receipt_id,),
    ).fetchone()
    if row is None or not row[1]:
        return None
    key = email_key(row[1])
    for person in people(connection, row[0]):
        if person.key == key and receipt_id in person.receipt_ids:
            return person
    return None


def current(connection: Any, person: Person) -> Person | None:
    """The person as the ledger has them now, from their receipts only; None once none of them stands.

    A notify run plans from one snapshot and then sends for minutes: this re-read, just before each
    mail, sees a withdrawal, unsubscribe, erasure or notice recorded since."""
    for now in people(connection, person.policy_id, only=person.receipt_ids):
        if now.key == person.key:
            return now
    return None


def receipt_state(connection: Any, receipt_id: str) -> dict[str, bool] | None:
    """Plain facts about one receipt (confirmed, withdrawn, erased, updates, third_parties), or None when unknown.

    `updates` and `third_parties` say whether that consent still stands (given, and not stopped)."""
    row = connection.execute(
        "SELECT policy_id, consent_third_parties FROM entries WHERE receipt_id = ? AND kind = 'consent'", (receipt_id,)
    ).fetchone()
    if row is None:
        return None
    r = _receipts(connection, row[0], (receipt_id,))[receipt_id]
    return {
        "confirmed": r.confirmed, "withdrawn": r.withdrawn, "erased": r.erased or not r.email,
        "updates": r.updates and not r.updates_withdrawn,
        # Only a withdrawal without flags withdraws it, and that sets `withdrawn`.
        "third_parties": bool(row[1]) and not r.withdrawn,
    }
