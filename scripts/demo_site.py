"""A site with an active policy change, built and served exactly as `make run` serves it.

The browser tests and `make audit` both need what a visitor meets the week after a policy changed: a banner
on every page, a change history with a redline and a past version. The project's own docs/ may have no
recent change, so this copies docs/ and mkdocs.yml into a throwaway git repository, commits the policy,
then commits an edit together with its change record, and builds that with a fixed SOURCE_DATE_EPOCH.
The server is the real `policy-site serve` in its own process, with a temporary ledger.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The console scripts of the interpreter running us (the project's .venv under `make`).
BIN = Path(sys.executable).parent

# The build date, and the two change records: an old one (gives a past version) and an active one.
BUILD_DATE = dt.date(2026, 12, 1)
SOURCE_DATE_EPOCH = str(int(dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc).timestamp()))
OLD_CHANGE = ("2026-06-01", "Published the Privacy Policy on this site.")
ACTIVE_CHANGE = ("2026-11-20", "Clarified that the Internet is not a safe medium.")
# The edit the active change introduces: one word out, one word in.
EDIT_BEFORE = "The Internet is not a secure medium."
EDIT_AFTER = "The Internet is not a safe medium."
REMOVED_WORD, ADDED_WORD = "secure", "safe"
POLICY_FILE = "docs/privacy.md"
ADMIN_TOKEN = "browser-test-admin-token"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _git(repo: Path, *args: str, date: str | None = None) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Policy Writer",
        "GIT_AUTHOR_EMAIL": "writer@example.org",
        "GIT_COMMITTER_NAME": "Policy Writer",
        "GIT_COMMITTER_EMAIL": "writer@example.org",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"{date}T09:00:00Z"
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def _with_record(text: str, date: str, summary: str, older: str | None = None) -> str:
    """The policy text with a `changes:` list (newest first) added after its `policy_id` line."""
    records = f"changes:\n  - date: {date}\n    summary: {summary}\n"
    if older:
        records += older
    marker = "policy_id: privacy\n"
    if marker not in text:
        raise ValueError(f"{POLICY_FILE}: expected a '{marker.strip()}' line in the front matter.")
    return text.replace(marker, marker + records, 1)


def make_change_repo(dest: Path, source: Path = ROOT) -> Path:
    """A git repository at ``dest`` with the project's site and two commits: the policy, then one change."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "docs", dest / "docs")
    shutil.copy2(source / "mkdocs.yml", dest / "mkdocs.yml")
    policy = dest / POLICY_FILE
    original = policy.read_text(encoding="utf-8")
    if EDIT_BEFORE not in original:
        raise ValueError(f"{POLICY_FILE}: the demo edit needs the sentence {EDIT_BEFORE!r}.")
    old_date, old_summary = OLD_CHANGE
    policy.write_text(_with_record(original, old_date, old_summary), encoding="utf-8")
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "Publish the privacy policy", date=old_date)
    new_date, new_summary = ACTIVE_CHANGE
    older = f"  - date: {old_date}\n    summary: {old_summary}\n"
    edited = _with_record(original.replace(EDIT_BEFORE, EDIT_AFTER), new_date, new_summary, older)
    policy.write_text(edited, encoding="utf-8")
    _git(dest, "commit", "-q", "-am", "Privacy policy: say the Internet is not a safe medium", date=new_date)
    return dest


def build_site(repo: Path, site_dir: Path, base_url: str) -> Path:
    """`mkdocs build --strict` of ``repo`` into ``site_dir`` on the fixed build date; raises with mkdocs' output."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "POLICY_SITE_URL": base_url.rstrip("/") + "/"}
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site_dir)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mkdocs build --strict failed in {repo}:\n{done.stdout}{done.stderr}")
    return site_dir


def manifest(site_dir: Path) -> dict[str, Any]:
    """The built site's policy-versions.json."""
    return json.loads((site_dir / "policy-versions.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Server:
    base_url: str  # ends with "/"
    ledger: Path
    site_dir: Path
    log: Path
    process: subprocess.Popen[bytes]


def server_env(site_dir: Path, ledger: Path, base_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment `policy-site serve` runs with: our site, a temporary ledger, an admin token for export."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICY_SITE_")}
    env.update({
        "POLICY_SITE_LEDGER": str(ledger),
        "POLICY_SITE_SITE_DIR": str(site_dir),
        "POLICY_SITE_MANIFEST": str(site_dir / "policy-versions.json"),
        "POLICY_SITE_ADMIN_TOKEN": ADMIN_TOKEN,
        "POLICY_SITE_BASE_URL": base_url.rstrip("/"),
    })
    env.update(extra or {})
    return env


@contextmanager
def serve(site_dir: Path, workdir: Path, port: int, extra_env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """Run `policy-site serve --host 127.0.0.1 --port PORT` (what `make run` runs) until the block ends."""
    base_url = f"http://127.0.0.1:{port}/"
    ledger = workdir / "ledger.sqlite3"
    log = workdir / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "policy-site"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir, env=server_env(site_dir, ledger, base_url, extra_env), stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(base_url, ledger, site_dir, log, process)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"policy-site serve exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            with urllib.request.urlopen(server.base_url + "api/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"policy-site serve did not answer {server.base_url}api/healthz in {timeout:.0f} s:\n"
                       f"{server.log.read_text()}")


def ledger_export(ledger: Path) -> list[dict[str, object]]:
    """`policy-site ledger export --ledger PATH` (JSON Lines), parsed."""
    done = subprocess.run(
        [str(BIN / "policy-site"), "ledger", "export", "--ledger", str(ledger)],
        capture_output=True, text=True, timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"policy-site ledger export failed: {done.stderr or done.stdout}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
