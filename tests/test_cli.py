"""`policy-site ledger ...`: the click layer over the ledger, in-process and as a real process."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from ledger_helpers import draft

from form_handler.cli import cli
from form_handler.ledger.export import safe_cell
from form_handler.ledger.sqlite.store import Ledger, Receipt

POLICY_SITE = Path(sys.executable).with_name("policy-site")


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[Receipt]]:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as led:
        receipts = [led.append_consent(draft(email=f"p{i}@example.org", third=True)) for i in range(6)]
        receipts.append(led.append_consent(draft(email="=evil@example.org", message="=1+1", third=True)))
    return path, receipts


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["ledger", *args])
    return result.exit_code, result.output


def test_verify_prints_count_head_version_and_pragmas(filled: tuple[Path, list[Receipt]]) -> None:
    path, receipts = filled
    code, out = invoke("verify", "--ledger", str(path))
    assert code == 0, out
    assert "entries: 7\n" in out and f"head: {receipts[-1].entry_hash}\n" in out
    assert "sqlite: 3." in out and "chain: ok" in out
    assert "journal_mode=wal synchronous=FULL busy_timeout=10000" in out


def test_verify_against_head_checkpoint_file_and_json(filled: tuple[Path, list[Receipt]], tmp_path: Path) -> None:
    path, _ = filled
    code, checkpoint = invoke("head", "--ledger", str(path))
    assert code == 0 and json.loads(checkpoint)["count"] == 7
    (tmp_path / "cp.json").write_text(checkpoint)
    assert invoke("verify", "--ledger", str(path), "--against", str(tmp_path / "cp.json"))[0] == 0
    cut = json.dumps({"count": 9, "head": "b" * 64, "at": "2026-01-01T00:00:00Z"})
    code, out = invoke("verify", "--ledger", str(path), "--against", cut)
    assert code == 1 and "Error:" in out and "checkpoint has 9" in out


def test_verify_names_first_bad_entry_and_exits_1(filled: tuple[Path, list[Receipt]]) -> None:
    path, _ = filled
    with Ledger(path) as led:
        led.connection.execute("DROP TRIGGER entries_no_update")
        led.connection.execute("UPDATE entries SET hash = ? WHERE seq = 4", ("c" * 64,))
    code, out = invoke("verify", "--ledger", str(path))
    assert code == 1 and "Error:" in out and "entry #4" in out


def test_export_csv_neutralises_formulas(filled: tuple[Path, list[Receipt]]) -> None:
    code, out = invoke("export", "--ledger", str(filled[0]), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 7 and rows[-1]["email"] == "'=evil@example.org" and rows[-1]["message"] == "'=1+1"
    assert [safe_cell(v) for v in ("+1", "-1", "@x", "\tx", "\rx", "ok", None, True)] == [
        "'+1", "'-1", "'@x", "'\tx", "'\rx", "ok", "", "true"]


def test_export_third_party_jsonl_and_erase(filled: tuple[Path, list[Receipt]]) -> None:
    path, receipts = filled
    with Ledger(path) as led, led.transaction() as txn:  # every owner but p5's followed the confirmation link
        for r in receipts[:5] + receipts[6:]:
            txn.append("confirmation", r.receipt_id, policy_id="privacy")
    code, out = invoke("erase", "--ledger", str(path), receipts[0].receipt_id)
    assert code == 0 and "erasure entry #14" in out
    code, out = invoke("export", "--ledger", str(path), "--third-party")
    emails = [json.loads(line)["email"] for line in out.splitlines()]
    assert emails == ["=evil@example.org"] + [f"p{i}@example.org" for i in range(1, 5)]


def test_stats_prints_json_and_unknown_receipt_is_an_error(filled: tuple[Path, list[Receipt]]) -> None:
    path, _ = filled
    code, out = invoke("stats", "--ledger", str(path))
    assert code == 0 and json.loads(out)["per_consent"]["third_parties"] == 7
    code, out = invoke("erase", "--ledger", str(path), "nope")
    assert code == 1 and out.startswith("Error: receipt_id 'nope' is not in the ledger.")


def test_missing_ledger_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    code, out = invoke("verify", "--ledger", str(tmp_path / "none.sqlite3"))
    assert code == 1 and out.startswith("Error:") and "Traceback" not in out


def test_ledger_commands_have_help_ending_with_example() -> None:
    for name in ("verify", "head", "export", "stats", "erase"):
        code, out = invoke(name, "--help")
        assert code == 0 and "Example:" in out and "--ledger" in out


def test_real_process_verify_uses_env_ledger(filled: tuple[Path, list[Receipt]], tmp_path: Path) -> None:
    path, _ = filled
    env = {"POLICY_SITE_LEDGER": str(path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(POLICY_SITE), "ledger", "verify"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "entries: 7" in done.stdout and "synchronous=FULL" in done.stdout
    with Ledger(path) as led:
        led.connection.execute("DROP TRIGGER entries_no_update")
        led.connection.execute("UPDATE entries SET canonical = canonical || x'20' WHERE seq = 2")
    done = subprocess.run([str(POLICY_SITE), "ledger", "verify"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "Error:" in done.stderr and "entry #2" in done.stderr


def test_verify_on_a_ledger_of_the_old_schema_migrates_it_and_passes(tmp_path: Path) -> None:
    # Written by the code before schema 3 (tests/fixtures/ledgers/make_schema_2.py); verify opens it read-only.
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes((Path(__file__).parent / "fixtures" / "ledgers" / "schema-2.sqlite3").read_bytes())
    code, out = invoke("verify", "--ledger", str(path))
    assert code == 0 and "entries: 8\n" in out and "chain: ok" in out, out
    code, out = invoke("erase", "--ledger", str(path), "01a22c67d5846c10457de3dd20df3bcd")  # bob's v1 consent
    assert code == 0 and "erasure entry #9" in out and invoke("verify", "--ledger", str(path))[0] == 0
