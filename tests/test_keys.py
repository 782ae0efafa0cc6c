"""The e-mail link key lives outside the ledger: key file modes, rotation, and moving an old key out."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner
from ledger_helpers import draft
from starlette.testclient import TestClient

from form_handler.consent import keys

from form_handler.consent import tokens
from form_handler.web.app import create_app
from form_handler.cli import cli
from form_handler.consent.keys import KeyFileError
from form_handler.ledger.sqlite.store import Ledger
from form_handler.settings import Settings

TODAY = date.today()


def settings_in(tmp_path: Path, **kw: object) -> Settings:
    manifest = tmp_path / "policy-versions.json"
    manifest.write_text('{"policies": [{"id": "privacy", "title": "Privacy Policy", "url": "privacy/", '
                        '"version": "' + "a" * 64 + '", "versions": []}]}')
    return replace(Settings(ledger_path=tmp_path / "var" / "ledger.sqlite3", manifest=str(manifest),
                            rate_limit=0, smtp_port=1, base_url="http://127.0.0.1:8000"), **kw)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    first = keys.load(settings)
    path = keys.key_file_path(settings)
    assert mode(path) == 0o600 and path.parent == settings.ledger_path.parent
    assert keys.load(settings) == first and len(first.signing) == 32


def test_key_file_readable_by_others_is_refused_naming_the_fix(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    keys.load(settings)
    os.chmod(keys.key_file_path(settings), 0o644)
    with pytest.raises(KeyFileError, match=r"can be read by others \(mode 0644\); run chmod 600"):
        keys.load(settings)


def test_service_refuses_to_start_with_a_readable_key_file(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, key_file=tmp_path / "keys.json")
    keys.load(settings)
    os.chmod(tmp_path / "keys.json", 0o640)
    with pytest.raises(KeyFileError, match="keys.json"):
        with TestClient(create_app(settings), base_url=settings.base_url):
            pass


def test_rotated_key_verifies_old_links_until_its_day_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    old = keys.read_key_file(path, create=True)
    token = tokens.sign(old.signing, "withdraw", "r1", "privacy", "v", now=time.time())
    new = keys.rotate(path, TODAY + timedelta(days=1))
    assert new.signing != old.signing and mode(path) == 0o600
    assert tokens.verify(new.verifying(time.time()), token, "withdraw", now=time.time()).receipt_id == "r1"
    later = keys.end_of_day(TODAY + timedelta(days=1)) + 1
    with pytest.raises(tokens.TokenRefused, match="not issued by us"):
        tokens.verify(new.verifying(later), token, "withdraw", now=later)


def test_previous_secret_from_the_environment_verifies_until_its_day() -> None:
    env = {"POLICY_SITE_SECRET": "new", "POLICY_SITE_SECRET_PREVIOUS": "old",
           "POLICY_SITE_SECRET_PREVIOUS_UNTIL": TODAY.isoformat()}
    loaded = keys.load(Settings.from_env(env))
    assert loaded.signing == keys.from_secret("new")
    # At the last second of its day and the first after, not at time.time(): a suite that runs past midnight moved
    # "now" beyond the TODAY read at import, and the old key was (rightly) gone.
    assert loaded.verifying(keys.end_of_day(TODAY)) == (keys.from_secret("new"), keys.from_secret("old"))
    assert loaded.verifying(keys.end_of_day(TODAY) + 1) == (keys.from_secret("new"),)


def test_ledger_and_the_files_sqlite_makes_beside_it_are_0600(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        with Ledger(tmp_path / "var" / "ledger.sqlite3") as led:
            led.append_consent(draft())
            names = ["ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm"]
            assert {n: mode(tmp_path / "var" / n) for n in names} == dict.fromkeys(names, 0o600)
        assert mode(tmp_path / "var") == 0o700
    finally:
        os.umask(old_umask)


def test_an_old_world_readable_ledger_is_narrowed_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path).close()
    os.chmod(path, 0o644)
    Ledger(path).close()
    assert mode(path) == 0o600


def make_legacy_ledger(path: Path) -> str:
    """A ledger as the versions before the key file left it: key in `meta`, copies in free pages, 0644."""
    with Ledger(path) as led:
        receipt = led.append_consent(draft(updates=True))
    key = os.urandom(32).hex()
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA secure_delete=OFF")
    conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('link_key', ?)", (key,))
    # A dropped table without secure_delete leaves its pages, key and all, on the free list.
    conn.execute("CREATE TABLE scratch (x BLOB)")
    conn.execute("INSERT INTO scratch VALUES (?)", ((key * 200).encode(),))
    conn.execute("DROP TABLE scratch")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.chmod(path, 0o644)
    assert key.encode() in path.read_bytes()
    return receipt.receipt_id + " " + key


def test_old_ledger_key_moves_to_the_key_file_and_old_links_still_work(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    receipt_id, key = make_legacy_ledger(settings.ledger_path).split()
    old_link = tokens.sign(bytes.fromhex(key), "confirm", receipt_id, "privacy", "a" * 64, now=time.time())
    with TestClient(create_app(settings), base_url=settings.base_url) as client:
        page = client.get(f"/api/confirm?token={old_link}")
    assert page.status_code == 200 and "Confirm your e-mail address" in page.text
    assert keys.read_key_file(keys.key_file_path(settings)).signing.hex() == key
    for name in (settings.ledger_path, settings.ledger_path.with_name("ledger.sqlite3-wal")):
        assert not name.exists() or key.encode() not in name.read_bytes(), name
    assert mode(settings.ledger_path) == 0o600
    with Ledger(settings.ledger_path, readonly=True) as led:
        assert led.verify().ok and led.legacy_link_key() is None


def test_a_new_service_keeps_no_key_in_the_ledger(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    with TestClient(create_app(settings), base_url=settings.base_url) as client:
        r = client.post("/api/feedback", json={"message": "Hi", "policy_id": "privacy", "policy_version": "a" * 64,
                                               "email": "ann@example.org", "consent_updates": True})
        assert r.status_code == 201, r.text
        key = keys.read_key_file(keys.key_file_path(settings)).signing
        data = b"".join(p.read_bytes() for p in settings.ledger_path.parent.glob("ledger.sqlite3*"))
    assert key.hex().encode() not in data and key not in data


def test_cli_keys_rotate_makes_a_new_signing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICY_SITE_LEDGER", str(tmp_path / "ledger.sqlite3"))
    monkeypatch.delenv("POLICY_SITE_SECRET", raising=False)
    path = tmp_path / "link-keys.json"
    old = keys.read_key_file(path, create=True)
    until = (TODAY + timedelta(days=30)).isoformat()
    result = CliRunner().invoke(cli, ["keys", "rotate", "--verify-until", until])
    assert result.exit_code == 0, result.output
    new = keys.read_key_file(path)
    assert new.signing != old.signing and [k.key for k in new.previous] == [old.signing]
    monkeypatch.setenv("POLICY_SITE_SECRET", "s")
    refused = CliRunner().invoke(cli, ["keys", "rotate", "--verify-until", until])
    assert refused.exit_code == 1 and "POLICY_SITE_SECRET_PREVIOUS" in refused.output
