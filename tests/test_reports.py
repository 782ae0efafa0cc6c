"""The statistics counters (schema 5) against a full recount of the ledger (reports.recount_stats).

The counters are kept by triggers on every INSERT into entries, so the generated test writes rows straight
into the table: any day, policy, version (a NULL one included), flag (NULL included) and order of kinds,
repeated withdrawals and erasures too, none of which the ledger's own API would let it choose.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import apsw
import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import draft
from pgserver import PgServer

from form_handler.web import mail_routes

from form_handler.ledger.sqlite import reports

from form_handler.consent import tokens
from form_handler.ledger import open_ledger
from form_handler.ledger.sqlite.store import Ledger

DAYS = ("2026-01-01", "2026-01-02", "2026-03-15")
POLICIES = ("privacy", "terms")
VERSIONS = ("1" * 64, "2" * 64, None)
FLAG = st.sampled_from((0, 1, None))
# (kind, which receipt, day, policy, version, contact, updates, third parties); a "stop" is the e-mail
# unsubscribe (a withdrawal naming consent_updates), "withdrawal" the one without flags, and "some" a withdrawal
# naming the consents whose flag is not None (false; all None is a withdrawal of everything), as schema 7 reads it.
OP = st.tuples(st.sampled_from(("consent", "consent", "reconsent", "withdrawal", "stop", "some", "some", "erasure",
                                "confirmation", "notice")),
               st.integers(0, 30), st.sampled_from(DAYS), st.sampled_from(POLICIES), st.sampled_from(VERSIONS),
               FLAG, FLAG, FLAG)


def counted(conn: apsw.Connection) -> tuple[Any, ...]:
    """The counters, unsuppressed; groups that came back to 0 are left out."""
    totals = conn.execute("SELECT * FROM stats_totals").fetchall()[0][1:]
    days = conn.execute("SELECT day, n FROM stats_days WHERE n != 0 ORDER BY 1").fetchall()
    versions = conn.execute("SELECT policy_id, policy_version, sum(n) FROM stats_versions GROUP BY 1, 2"
                            " HAVING sum(n) != 0 ORDER BY 1, 2").fetchall()
    return tuple(totals), days, versions


def recounted(conn: apsw.Connection) -> tuple[Any, ...]:
    """The same, counted from every receipt with the receipts view's definitions (as reports.recount_stats)."""
    standing = "FROM receipts WHERE NOT withdrawn AND NOT erased"
    totals = conn.execute(
        "SELECT count(*), coalesce(sum(withdrawn), 0), coalesce(sum(erased), 0) FROM receipts").fetchall()[0]
    sums = conn.execute(f"SELECT count(*), coalesce(sum(consent_contact AND NOT contact_stopped), 0),"
                        f" coalesce(sum(consent_updates AND NOT updates_stopped), 0),"
                        f" coalesce(sum(consent_third_parties AND NOT third_parties_stopped), 0) {standing}").fetchall()[0]
    days = conn.execute(f"SELECT substr(recorded_at, 1, 10), count(*) {standing} GROUP BY 1 ORDER BY 1").fetchall()
    versions = conn.execute(f"SELECT policy_id, policy_version, count(*) {standing} GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    return tuple(totals) + tuple(sums), days, versions


def insert(conn: apsw.Connection, kind: str, receipt_id: str, day: str, policy: str, version: str | None,
           flags: tuple[int | None, int | None, int | None]) -> None:
    seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM entries").fetchall()[0][0]
    conn.execute(
        "INSERT INTO entries (seq, prev_hash, hash, canonical, kind, receipt_id, recorded_at, policy_id, policy_version,"
        " consent_contact, consent_updates, consent_third_parties) VALUES (?, ?, ?, x'7b7d', ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, f"prev {seq}", f"hash {seq}", kind, receipt_id, f"{day}T12:00:00.000Z", policy, version, *flags),
    )


def named(kind: str, flags: tuple[int | None, int | None, int | None]) -> tuple[int | None, ...]:
    """The consent flags of a generated entry that is not a consent: a withdrawal names consents by setting them 0."""
    if kind == "stop":
        return (None, 0, None)
    if kind == "some":
        return tuple(None if f is None else 0 for f in flags)
    return (None, None, None)


def test_counters_equal_a_recount_after_any_mix_of_entries(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        conn = led.connection

        @settings(max_examples=150, deadline=None)
        @given(st.lists(OP, max_size=80))
        def check(ops: list[tuple[Any, ...]]) -> None:
            conn.execute("BEGIN")
            try:
                receipts: list[str] = []
                for kind, which, day, policy, version, contact, updates, third in ops:
                    if kind == "consent":
                        receipts.append(f"r{len(receipts)}")
                        insert(conn, kind, receipts[-1], day, policy, version or "1" * 64, (contact, updates, third))
                    elif receipts:
                        flags = named(kind, (contact, updates, third))
                        insert(conn, "withdrawal" if kind in ("stop", "some") else kind, receipts[which % len(receipts)],
                               day, policy, version if kind in ("reconsent", "notice") else None, flags)
                assert counted(conn) == recounted(conn)
                assert reports.stats(conn) == reports.recount_stats(conn)
            finally:
                conn.execute("ROLLBACK")

        check()


def test_counters_follow_the_ledgers_own_writes_and_the_link_routes(tmp_path: Path) -> None:
    # Consents, confirmations, reconsent, withdraw and unsubscribe links (as the routes record them),
    # withdraw tokens, erasures, twice each where that is allowed: counts of 5 and more, so nothing is suppressed.
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        made = []
        for i in range(60):
            with led.transaction() as txn:
                r = txn.append_consent(draft(f"p{i % 20}@example.org", third=i % 3 == 0, updates=i % 2 == 0))
                if i % 4:
                    txn.append("confirmation", r.receipt_id, policy_id="privacy")
            made.append(r)

        def follow(purpose: tokens.Purpose, receipt_id: str) -> None:
            claim = tokens.LinkClaim(purpose, receipt_id, "privacy", "b" * 64, int(time.time()) + 60)
            decided = led.read(lambda conn: mail_routes.decide(purpose, claim, conn))
            with led.transaction() as txn:
                mail_routes.record(purpose, claim, txn, decided)

        for i in range(1, 12):
            if i % 4:  # confirmed receipts (of different addresses) agree to version b
                follow("reconsent", made[i].receipt_id)
        for r in made[12:20]:
            follow("unsubscribe", r.receipt_id)
        follow("withdraw", made[21].receipt_id)
        for r in made[30:40]:
            led.withdraw(r.receipt_id, r.withdraw_token)
        for r in made[35:50]:
            led.erase(r.receipt_id)
        with led.transaction() as txn:  # a second full withdrawal and a second unsubscribe change nothing
            txn.append("withdrawal", made[31].receipt_id)
            txn.append("withdrawal", made[13].receipt_id, consent_updates=False)
        conn = led.connection
        stats = reports.stats(conn)
        assert counted(conn) == recounted(conn) and stats == reports.recount_stats(conn)
    assert stats["submissions"] == 60 and stats["erased"] == 15 and stats["standing"] is not None
    assert all(v is not None for v in stats["per_consent"].values())


def pg_counted(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """counted() on the PostgreSQL ledger."""
    totals = conn.execute("SELECT submissions, withdrawn, erased, standing, contact, updates, third_parties"
                          " FROM stats_totals").fetchall()[0]
    days = conn.execute("SELECT day, n FROM stats_days WHERE n <> 0 ORDER BY 1").fetchall()
    versions = conn.execute("SELECT policy_id, policy_version, sum(n) FROM stats_versions GROUP BY 1, 2"
                            " HAVING sum(n) <> 0 ORDER BY 1, 2").fetchall()
    return tuple(int(n) for n in totals), [(d, int(n)) for d, n in days], [(p, v, int(n)) for p, v, n in versions]


def pg_recounted(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """recounted() on the PostgreSQL ledger, from its receipts view."""
    standing = "FROM receipts WHERE NOT withdrawn AND NOT erased"
    totals = conn.execute("SELECT count(*), count(*) FILTER (WHERE withdrawn), count(*) FILTER (WHERE erased)"
                          " FROM receipts").fetchall()[0]
    sums = conn.execute(f"SELECT count(*), count(*) FILTER (WHERE consent_contact <> 0 AND NOT contact_stopped),"
                        f" count(*) FILTER (WHERE consent_updates <> 0 AND NOT updates_stopped),"
                        f" count(*) FILTER (WHERE consent_third_parties <> 0 AND NOT third_parties_stopped)"
                        f" {standing}").fetchall()[0]
    days = conn.execute(f"SELECT substr(recorded_at, 1, 10), count(*) {standing} GROUP BY 1 ORDER BY 1").fetchall()
    versions = conn.execute(f"SELECT policy_id, policy_version, count(*) {standing} GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    return (tuple(int(n) for n in (*totals, *sums)), [(d, int(n)) for d, n in days],
            [(p, v, int(n)) for p, v, n in versions])


def test_postgres_counters_equal_a_recount_after_any_mix_of_entries(postgres: PgServer) -> None:
    url = postgres.create_database()
    try:
        open_ledger(url).close()  # creates the schema
        with psycopg.connect(url) as conn:

            @settings(max_examples=60, deadline=None)
            @given(st.lists(OP, max_size=60))
            def check(ops: list[tuple[Any, ...]]) -> None:
                try:
                    receipts: list[str] = []
                    for seq, (kind, which, day, policy, version, contact, updates, third) in enumerate(ops, 1):
                        if kind == "consent":
                            receipts.append(f"r{len(receipts)}")
                            rid, flags, ver = receipts[-1], (contact, updates, third), version or "1" * 64
                        elif receipts:
                            rid, flags = receipts[which % len(receipts)], named(kind, (contact, updates, third))
                            ver = version if kind in ("reconsent", "notice") else None
                        else:
                            continue
                        conn.execute(
                            "INSERT INTO entries (seq, prev_hash, hash, canonical, kind, receipt_id, recorded_at,"
                            " policy_id, policy_version, consent_contact, consent_updates, consent_third_parties)"
                            " VALUES (%s, %s, %s, '\\x7b7d', %s, %s, %s, %s, %s, %s, %s, %s)",
                            (seq, f"prev {seq}", f"hash {seq}", "withdrawal" if kind in ("stop", "some") else kind,
                             rid, f"{day}T12:00:00.000Z", policy, ver, *flags))
                    assert pg_counted(conn) == pg_recounted(conn)
                finally:
                    conn.rollback()

            check()
    finally:
        postgres.drop_database(url)
