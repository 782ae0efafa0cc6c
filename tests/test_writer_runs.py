"""The writer's batches (form_handler/ledger/sqlite/writer.py): a run of submissions is appended together, and
falls back to one by one, leaving nothing behind, when the run fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import draft

from form_handler.ledger.contract import AppendConsent
from form_handler.ledger.sqlite.store import Ledger, LedgerTxn
from form_handler.ledger.sqlite.writer import GroupCommitWriter
from form_handler.ledger.types import LedgerRefusal, Receipt


def run_batch(path: Path, ops: list[Any]) -> list[Any]:
    w = GroupCommitWriter(path)
    w.open()
    try:
        return w.run_batch(ops)
    finally:
        w.close()


def test_a_run_of_submissions_is_one_append_consents_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = LedgerTxn.append_consents

    def counted(self: LedgerTxn, drafts: Any) -> list[Receipt]:
        calls.append(len(drafts))
        return original(self, drafts)

    monkeypatch.setattr(LedgerTxn, "append_consents", counted)
    first = [AppendConsent(draft(message=f"a{i}")) for i in range(4)]
    second = [AppendConsent(draft(message=f"b{i}")) for i in range(3)]
    outcomes = run_batch(tmp_path / "l.sqlite3", [*first, lambda txn: txn.meta_set("x", "1"), *second])
    assert calls == [4, 3]  # the operation between them splits the runs
    assert all(ok for ok, _ in outcomes)
    assert [r.seq for ok, r in outcomes if isinstance(r, Receipt)] == list(range(1, 8))
    with Ledger(tmp_path / "l.sqlite3", readonly=True) as ledger:
        assert ledger.verify().ok and ledger.head().count == 7


def test_a_run_that_fails_partway_leaves_nothing_and_is_recorded_one_by_one(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    original = LedgerTxn.append_consents

    def writes_then_fails(self: LedgerTxn, drafts: Any) -> list[Receipt]:
        original(self, drafts[:2])  # rows written inside the run's savepoint...
        raise RuntimeError("a bug after two rows")  # ...then a failure that is not a refusal

    monkeypatch.setattr(LedgerTxn, "append_consents", writes_then_fails)
    ops = [AppendConsent(draft(message=f"m{i}")) for i in range(5)]
    outcomes = run_batch(tmp_path / "l.sqlite3", ops)
    assert [r.seq for ok, r in outcomes] == [1, 2, 3, 4, 5]
    with Ledger(tmp_path / "l.sqlite3", readonly=True) as ledger:
        assert ledger.verify().ok and ledger.head().count == 5  # not 7: the two rows were rolled back


def test_a_refused_draft_in_a_run_is_refused_alone(tmp_path: Path) -> None:
    from form_handler.ledger.types import ConsentDraft

    bad = ConsentDraft("privacy", draft().policy_version, "/feedback/", None, None, False, False, False)  # type: ignore[arg-type]
    outcomes = run_batch(tmp_path / "l.sqlite3", [AppendConsent(draft()), AppendConsent(bad), AppendConsent(draft())])
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], LedgerRefusal) and outcomes[1][1].field == "message"
