"""Docs honesty: every setting is documented in the README, every command has help."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click

from form_handler import settings
from form_handler.cli import cli

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _setting_names() -> set[str]:
    source = inspect.getsource(settings.Settings.from_env)
    names = set(re.findall(r'(?:get|integer|boolean)\("([A-Z_]+)"', source))
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
