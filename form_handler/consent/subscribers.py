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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from form_handler.consent.addresses import email_key


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
    for row in rows:
        _fold(receipts, row)
    return receipts


def _fold(receipts: dict[str, _Receipt], row: Any) -> None:
    # One entry (seq, kind, receipt_id, recorded_at, policy_version, consent_updates, email) into its receipt.
    seq, kind, receipt_id, recorded_at, version, updates, email = row
    r = receipts.get(receipt_id)
    if r is None:
        r = receipts[receipt_id] = _Receipt(receipt_id, email)
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


def people(connection: Any, policy_id: str, *, only: tuple[str, ...] | None = None) -> list[Person]:
    """Every address with at least one confirmed, standing receipt for the policy, in order of first receipt.

    With `only`, just those receipts are read (a quick re-read of people already known). This holds every
    receipt of the policy in memory at once: to go through everyone, use each_person()."""
    groups: dict[str, list[_Receipt]] = {}
    for r in _receipts(connection, policy_id, only).values():
        if r.email:
            groups.setdefault(email_key(r.email), []).append(r)
    return [p for receipts in groups.values() if (p := _person(policy_id, receipts)) is not None]


# Every entry of every receipt of the policy that still has an address, address by address (personal.email_key,
# written with the address by addresses.email_key, schema 4), in ledger order within each address. SQLite sorts
# in its temp store, which spills to temporary files beyond the page cache's size, so Python never holds more
# than the entries of one address. An erased receipt has no `personal` row and drops out, as in people().
# (Sorting on a Python function registered on the connection instead took twice as long: one call per row.)
_BY_ADDRESS_SQL = (
    "SELECT p.email_key, e.seq, e.kind, e.receipt_id, e.recorded_at, e.policy_version, e.consent_updates,"
    " p.email FROM entries c JOIN personal p ON p.receipt_id = c.receipt_id"
    " JOIN entries e ON e.receipt_id = c.receipt_id"
    " WHERE c.kind = 'consent' AND c.policy_id = ? AND p.email IS NOT NULL AND p.email <> ''"
    " ORDER BY p.email_key, e.seq"
)


def each_person(connection: Any, policy_id: str) -> Iterator[Person]:
    """The people of people(), one at a time in order of their address, in memory independent of their number.

    Run it inside one read transaction (one snapshot), on a connection that nothing else uses until the
    iterator is done: the rows are read as they are yielded."""
    key: str | None = None
    group: dict[str, _Receipt] = {}
    for row in connection.execute(_BY_ADDRESS_SQL, (policy_id,)):
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


def person_of(connection: Any, receipt_id: str) -> Person | None:
    """The person a receipt belongs to (by its address), or None when withdrawn, erased or unknown.

    Found through indexes (personal.email_key, then each receipt's entries): the cost grows with the
    receipts of this one address, not with the ledger."""
    row = connection.execute(
        "SELECT c.policy_id, p.email, p.email_key FROM entries c LEFT JOIN personal p ON p.receipt_id = c.receipt_id"
        " WHERE c.receipt_id = ? AND c.kind = 'consent'",
        (receipt_id,),
    ).fetchone()
    if row is None or not row[1]:
        return None
    policy_id, _, key = row
    for person in people(connection, policy_id, only=receipts_of_address(connection, policy_id, key)):
        if person.key == key and receipt_id in person.receipt_ids:
            return person
    return None


def receipts_of_address(connection: Any, policy_id: str, key: str) -> tuple[str, ...]:
    """Every receipt for the policy whose address compares as `key` (addresses.email_key), erased ones aside."""
    # personal_email_key finds the address's rows; entries_receipt each one's consent (schema 4).
    rows = connection.execute(
        "SELECT p.receipt_id FROM personal p JOIN entries c ON c.receipt_id = p.receipt_id AND c.kind = 'consent'"
        " WHERE p.email_key = ? AND c.policy_id = ? ORDER BY p.receipt_id",
        (key, policy_id),
    )
    return tuple(r[0] for r in rows)


@dataclass(frozen=True)
class Seen:
    """What a decision about one receipt's address read: the head of its snapshot, the address, its receipts."""

    seq: int
    head: str
    policy_id: str
    key: str | None
    receipt_ids: tuple[str, ...]


def seen(connection: Any, receipt_id: str) -> Seen:
    """What person_of() and receipt_state() about `receipt_id` depend on, in the connection's snapshot.

    Read in the same read transaction as the decision; changed_since() later tells whether it still holds."""
    head = connection.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
    row = connection.execute(
        "SELECT c.policy_id, p.email_key FROM entries c LEFT JOIN personal p ON p.receipt_id = c.receipt_id"
        " WHERE c.receipt_id = ? AND c.kind = 'consent'",
        (receipt_id,),
    ).fetchone()
    policy_id, key = (str(row[0]), row[1]) if row else ("", None)
    ids = set(receipts_of_address(connection, policy_id, key)) if key is not None else set()
    return Seen(head[0] if head else 0, head[1] if head else "", policy_id, key, tuple(sorted(ids | {receipt_id})))


def changed_since(connection: Any, before: Seen) -> bool:
    """Whether anything `before` covers may have changed since its snapshot: an entry of one of its receipts,
    or a new consent from its address for its policy. Cheap: it reads only the entries appended since.

    The ledger only grows, and every change to a receipt is an entry (an erasure, too, leaves one), so
    entries after the snapshot's head are the only place a change can be. The head's hash is compared as well,
    so a ledger file put back from a copy cannot pass for the one that was read."""
    head = connection.execute("SELECT hash FROM entries WHERE seq = ?", (before.seq,)).fetchone()
    if head is None or head[0] != before.head:
        return True
    # The unary + keep SQLite off the receipt index: the seq range (the rowid) is the short way here.
    row = connection.execute(
        "SELECT 1 FROM entries e WHERE e.seq > ? AND (+e.receipt_id IN (SELECT value FROM json_each(?))"
        " OR (+e.kind = 'consent' AND +e.policy_id = ? AND EXISTS (SELECT 1 FROM personal p"
        " WHERE p.receipt_id = e.receipt_id AND p.email_key = ?))) LIMIT 1",
        (before.seq, json.dumps(before.receipt_ids), before.policy_id, before.key),
    ).fetchone()
    return row is not None


def current(connection: Any, person: Person) -> Person | None:
    """The person as the ledger has them now, from their receipts only; None once none of them stands.

    A notify run plans from one snapshot and then sends for minutes: this re-read, just before each
    mail, sees a withdrawal, unsubscribe, erasure or notice recorded since."""
    for now in people(connection, person.policy_id, only=person.receipt_ids):
        if now.key == person.key:
            return now
    return None


def of_receipts(connection: Any, policy_id: str, receipt_ids: tuple[str, ...]) -> Person | None:
    """The person that receipts of one address (a Person's receipt_ids) make up now, or None once none stands.

    current() without the address: an address never changes, it is only erased, so the receipts of one
    person stay one person (notify keeps only receipt ids, no addresses, in its plan file)."""
    found = people(connection, policy_id, only=receipt_ids)
    return found[0] if found else None


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
