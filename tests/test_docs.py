"""Docs honesty: every setting is documented in the README, every command has help."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import click
import yaml

from form_handler import settings
from form_handler.cli import cli

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _setting_names() -> set[str]:
    source = inspect.getsource(settings.Settings.from_env)
    names = set(re.findall(r'(?:get|integer|boolean|day|listed)\("([A-Z_]+)"', source))
    assert names, "found no POLICY_SITE_* settings in Settings.from_env"
    return {f"POLICY_SITE_{name}" for name in names}


def test_every_setting_is_in_the_readme() -> None:
    missing = sorted(name for name in _setting_names() if name not in README)
    assert missing == []


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
    return found


def test_every_command_has_help_and_is_in_the_readme() -> None:
    commands = _commands(cli)
    assert {"serve", "ledger"} <= {name for name, _ in commands}
    for name, command in commands:
        assert (command.help or "").strip(), f"policy-site {name} has no help"
        assert f"policy-site {name}" in README, f"policy-site {name} is not in the README"


def test_browser_deps_without_npm_says_what_to_install(tmp_path: Path) -> None:
    # A fresh machine without npm, as a user who cannot apt-get: one clear sentence, not "npm: not found".
    root = Path(__file__).parent.parent
    work = Path(tempfile.mkdtemp(dir="/tmp"))  # reachable by nobody, unlike pytest's private tmp_path
    try:
        for name in ("Makefile", "package.json", "package-lock.json"):
            shutil.copy(root / name, work / name)
        tools = work / "bin"
        tools.mkdir()
        for tool in ("make", "sh", "id"):  # everything the recipe needs, and no npm
            (tools / tool).symlink_to(shutil.which(tool) or tool)
        os.chmod(work, 0o755)
        as_user = [shutil.which("setpriv") or "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        result = subprocess.run([*as_user, str(tools / "make"), "-s", "-C", str(work), "browser-deps"],
                                env={"PATH": str(tools)}, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(work)
    assert result.returncode != 0 and "Install Debian's nodejs and npm packages" in result.stdout, result.stderr


def test_publish_workflow_stops_first_when_the_site_url_is_empty() -> None:
    workflow = yaml.safe_load((Path(__file__).parent.parent / ".github/workflows/publish.yml").read_text(encoding="utf-8"))
    first = workflow["jobs"]["build"]["steps"][0]
    assert first["env"]["SITE_URL"] == "${{ vars.POLICY_SITE_URL }}"
    for url, code in (("", 1), ("https://policies.example.org/", 0)):
        result = subprocess.run(["bash", "-e", "-c", first["run"]], env={"SITE_URL": url, "PATH": os.environ["PATH"]},
                                capture_output=True, text=True, timeout=10)
        assert result.returncode == code and ("POLICY_SITE_URL is empty" in result.stdout) == (code == 1)
