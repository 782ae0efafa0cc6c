"""Building a site in a fresh process with either generator (test helper): the site tests run against both.

``mkdocs``: `mkdocs build` with the `policy` plugin, as a team on MkDocs runs it. ``zensical``: `policy-site
build --generator zensical` (site_src/build.py), the only way to build the site's promises with Zensical.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATORS = ["mkdocs", "zensical"]
# One parameter for fixtures and tests that build a site: each runs once per generator.
each_generator = pytest.mark.parametrize("generator", GENERATORS)


def epoch(day: str) -> str:
    return str(int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc).timestamp()))


def build_site(
    project: Path, out: Path, generator: str, *, day: str | None, strict: bool = True, quiet: bool = False,
    path: str | None = None, timeout: int = 180,
) -> subprocess.CompletedProcess[str]:
    """Build ``project``/mkdocs.yml into ``out`` on the day ``day`` (None: today, no SOURCE_DATE_EPOCH)."""
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"} | {"NO_MKDOCS_2_WARNING": "1"}
    if day is not None:
        env["SOURCE_DATE_EPOCH"] = epoch(day)
    if path is not None:
        env["PATH"] = path
    config = str(project / "mkdocs.yml")
    if generator == "mkdocs":
        # The console script, not `python -m`: a clone of this project holds its own site_src, which `-m` would import.
        mkdocs = str(Path(sys.executable).parent / "mkdocs")
        cmd = [mkdocs, "build", *(["--strict"] if strict else []), *(["-q"] if quiet else []), "-f", config, "-d", str(out)]
        return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    cmd = [sys.executable, "-m", "site_src.build", "--generator", generator, *(["--strict"] if strict else []), "-f", config, "-d", str(out)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def search_texts(site: Path) -> list[tuple[str, str]]:
    """(location, text) of every entry in the site's search index (MkDocs' or Zensical's)."""
    mkdocs_index = site / "search" / "search_index.json"
    if mkdocs_index.is_file():
        return [(d["location"], d["text"]) for d in json.loads(mkdocs_index.read_text(encoding="utf-8"))["docs"]]
    items = json.loads((site / "search.json").read_text(encoding="utf-8"))["items"]
    return [(d["location"], d.get("text", "")) for d in items]
