"""A real git repository in a temporary folder, with scripted, dated commits (test helper)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml


def policy_source(body: str, changes: list[dict[str, Any]] | None = None, policy_id: str = "privacy") -> str:
    """A policy page: front matter with policy_id and change records, then the Markdown body."""
    meta: dict[str, Any] = {"title": "Privacy Policy", "policy_id": policy_id}
    if changes:
        meta["changes"] = changes
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + body.strip() + "\n"


class GitRepo:
    """git init in `root`; write files and commit them on given days (UTC noon), isolated from user config."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.name", "Policy Writer")
        self.git("config", "user.email", "writer@example.org")
        self.git("config", "commit.gpgsign", "false")

    def env(self, day: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
        if day is not None:
            env.update(GIT_AUTHOR_DATE=f"{day}T12:00:00Z", GIT_COMMITTER_DATE=f"{day}T12:00:00Z")
        return env

    def git(self, *args: str, day: str | None = None) -> str:
        done = subprocess.run(["git", *args], cwd=self.root, env=self.env(day), capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def commit(self, day: str, files: dict[str, str] | None = None, message: str = "Edit") -> str:
        """Write `files` (path -> text), commit everything on `day`, return the commit sha."""
        for name, text in (files or {}).items():
            self.write(name, text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message, day=day)
        return self.git("rev-parse", "HEAD")
