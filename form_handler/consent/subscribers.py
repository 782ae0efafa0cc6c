"""Who asked to hear about policy changes, read from the ledger: one `Person` per address and policy.

A person is an e-mail address, compared case-insensitively, with every receipt that carries it for one
policy. What counts, entry by entry (all chained, so the decision can be proven later):

- consent: the receipt and the version agreed to; `consent_updates` says whether they asked for mail;
- confirmation: the address was confirmed by following the double opt-in link. Only a confirmed
  receipt speaks for the address: anyone can type someone else's address into the form, so an
  unconfirmed one is kept as what it is (a claim) and changes nobody's version, subscription or
  sharing (form_handler/reports.py applies the same rule to the third-party export);
- reconsent: agreed to a newer version from a notice link;
- withdrawal: naming no consent, every consent of the receipt is withdrawn; naming some (set false), exactly
  those are (types.withdrawn_consents): `consent_updates: false` is the unsubscribe, only the wish for
  e-mails about changes;
- erasure: the address is gone, so the receipt cannot be matched to anyone any more;
- notice: a change notice about the version `policy_version` was sent.

Each function reads through a ledger view (contract.LedgerView): a read snapshot, or the writer's
transaction, so a route can decide ("was this link already used?") and record in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from form_handler.consent.addresses import email_key
from form_handler.ledger.contract import LedgerView
from form_handler.ledger.types import withdraws_all, withdrawn_consents


@dataclass
class _Receipt:
    receipt_id: str
    email: str | None
    updates: bool = False
    confirmed: bool = False
    withdrawn: bool = False
    updates_withdrawn: bool = False
    third_parties: bool = False
    third_parties_withdrawn: bool = False
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


def _receipts(view: LedgerView, policy_id: str, only: tuple[str, ...] | None = None) -> dict[str, _Receipt]:
    # Every entry of every receipt whose consent was for this policy (or of the receipts `only`), in chain order.
    receipts: dict[str, _Receipt] = {}
    for row in view.policy_entries(policy_id, only):
        _fold(receipts, row)
    return receipts


def _fold(receipts: dict[str, _Receipt], row: Any) -> None:
    # One entry (contract.EntryRow) into its receipt.
    seq, kind, receipt_id, recorded_at, version, updates, email, contact, third_parties = row
    r = receipts.get(receipt_id)
    if r is None:
        r = receipts[receipt_id] = _Receipt(receipt_id, email)
    if kind == "consent":
        r.updates = bool(updates)
        r.third_parties = bool(third_parties)
        r.agreed.append((seq, version, recorded_at))
    elif kind == "reconsent":
        r.agreed.append((seq, version, recorded_at))
    elif kind == "confirmation":
        r.confirmed = True
    elif kind == "withdrawal":
        if withdraws_all(kind, contact, updates, third_parties):
            r.withdrawn = True
        else:
            gone = withdrawn_consents(kind, contact, updates, third_parties)
            r.updates_withdrawn = r.updates_withdrawn or "consent_updates" in gone
            r.third_parties_withdrawn = r.third_parties_withdrawn or "consent_third_parties" in gone
    elif kind == "erasure":
        r.erased = True
    elif kind == "notice" and version:
        r.noticed.add(version)


def people(view: LedgerView, policy_id: str, *, only: tuple[str, ...] | None = None) -> list[Person]:
    """Every address with at least one confirmed, standing receipt for the policy, in order of first receipt.

    With `only`, just those receipts are read (a quick re-read of people already known). This holds every
    receipt of the policy in memory at once: to go through everyone, use each_person()."""
    groups: dict[str, list[_Receipt]] = {}
    for r in _receipts(view, policy_id, only).values():
        if r.email:
            groups.setdefault(email_key(r.email), []).append(r)
    return [p for receipts in groups.values() if (p := _person(policy_id, receipts)) is not None]


def each_person(view: LedgerView, policy_id: str) -> Iterator[Person]:
    """The people of people(), one at a time in order of their address, in memory independent of their number.

    Run it inside one read (one snapshot) and finish it there: the rows are read as they are yielded, sorted by
    address by the database (on disk beyond its cache), so only one address's entries are held at a time."""
    key: str | None = None
    group: dict[str, _Receipt] = {}
    for row in view.entries_by_address(policy_id):
        if row[0] != key:
            if group and (person := _person(policy_id, group.values())) is not None:
                yield person
            key, group = row[0], {}
        _fold(group, row[1:])
    if group and (person := _person(policy_id, group.values())) is not None:
        yield person


def _person(policy_id: str, receipts: Iterable[_Receipt]) -> Person | None:
    # One address's receipts (all with that address, in order of first entry) -> its standing, or None.
    receipts = list(receipts)
    standing = [r for r in receipts if r.standing]
    # Only what the address's owner confirmed decides the version and the subscription: otherwise a
    # stranger's unconfirmed post of the address on a newer version would stop her change notices.
    confirmed = [r for r in standing if r.confirmed]
    if not confirmed:
        return None
    seq, version, at, holder = max((a + (r.receipt_id,) for r in confirmed for a in r.agreed))
    updates = [r for r in standing if r.updates and not r.updates_withdrawn]
    email = next(r.email for r in confirmed if r.receipt_id == holder)
    return Person(
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


def person_of(view: LedgerView, receipt_id: str) -> Person | None:
    """The person a receipt belongs to (by its address), or None when withdrawn, erased or unknown.

    Found through indexes (the address's key, then each receipt's entries): the cost grows with the
    receipts of this one address, not with the ledger."""
    row = view.consent_address(receipt_id)
    if row is None or not row[1]:
        return None
    policy_id, _, key, _ = row
    for person in people(view, policy_id, only=view.receipts_of_address(policy_id, key)):
        if person.key == key and receipt_id in person.receipt_ids:
            return person
    return None


def receipts_of_address(view: LedgerView, policy_id: str, key: str) -> tuple[str, ...]:
    """Every receipt for the policy whose address compares as `key` (addresses.email_key), erased ones aside."""
    return view.receipts_of_address(policy_id, key)


@dataclass(frozen=True)
class Seen:
    """What a decision about one receipt's address read: the head of its snapshot, the address, its receipts."""

    seq: int
    head: str
    policy_id: str
    key: str | None
    receipt_ids: tuple[str, ...]


def seen(view: LedgerView, receipt_id: str) -> Seen:
    """What person_of() and receipt_state() about `receipt_id` depend on, in the view's snapshot.

    Read in the same snapshot as the decision; changed_since() later tells whether it still holds."""
    head = view.head_entry()
    row = view.consent_address(receipt_id)
    policy_id, key = (row[0], row[2]) if row else ("", None)
    ids = set(view.receipts_of_address(policy_id, key)) if key is not None else set()
    return Seen(head[0] if head else 0, head[1] if head else "", policy_id, key, tuple(sorted(ids | {receipt_id})))


def changed_since(view: LedgerView, before: Seen) -> bool:
    """Whether anything `before` covers may have changed since its snapshot: an entry of one of its receipts,
    or a new consent from its address for its policy. Cheap: it reads only the entries appended since.

    The ledger only grows, and every change to a receipt is an entry (an erasure, too, leaves one), so
    entries after the snapshot's head are the only place a change can be. The head's hash is compared as well,
    so a ledger put back from a copy cannot pass for the one that was read."""
    head = view.hash_at(before.seq)
    if head is None or head != before.head:
        return True
    return view.touched_since(before.seq, before.receipt_ids, before.policy_id, before.key)


def current(view: LedgerView, person: Person) -> Person | None:
    """The person as the ledger has them now, from their receipts only; None once none of them stands.

    A notify run plans from one snapshot and then sends for minutes: this re-read, just before each
    mail, sees a withdrawal, unsubscribe, erasure or notice recorded since."""
    for now in people(view, person.policy_id, only=person.receipt_ids):
        if now.key == person.key:
            return now
    return None


def of_receipts(view: LedgerView, policy_id: str, receipt_ids: tuple[str, ...]) -> Person | None:
    """The person that receipts of one address (a Person's receipt_ids) make up now, or None once none stands.

    current() without the address: an address never changes, it is only erased, so the receipts of one
    person stay one person (notify keeps only receipt ids, no addresses, in its plan file)."""
    found = people(view, policy_id, only=receipt_ids)
    return found[0] if found else None


def receipt_state(view: LedgerView, receipt_id: str) -> dict[str, bool] | None:
    """Plain facts about one receipt (confirmed, withdrawn, erased, updates, third_parties), or None when unknown.

    `updates` and `third_parties` say whether that consent still stands (given, and not stopped)."""
    row = view.consent_address(receipt_id)
    if row is None:
        return None
    r = _receipts(view, row[0], (receipt_id,))[receipt_id]
    return {
        "confirmed": r.confirmed, "withdrawn": r.withdrawn, "erased": r.erased or not r.email,
        "updates": r.updates and not r.updates_withdrawn,
        # Withdrawn with every consent (`withdrawn`), or on its own.
        "third_parties": bool(row[3]) and not r.withdrawn and not r.third_parties_withdrawn,
    }
