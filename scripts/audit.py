"""`make audit`: Lighthouse on the served site, mobile and desktop, with reports in audit/ and a score table.

Audits what a visitor meets the week after a policy changed (scripts/demo_site.py: banner, change history,
a past version), served by the real `policy-site serve`. Lighthouse is the pinned npm package, run with
Debian's Chromium; every category and every audit runs, none is turned off.

Usage: python -m scripts.audit [--out audit] [--page NAME ...] [--runs N]
With --runs N, each page is audited N times and the run with the median performance score is kept, as
Lighthouse's own guidance on variance suggests: on a busy machine, performance moves by several points.
Exits 1 when a page misses a target (accessibility, best practices, SEO 100; performance 95).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from scripts.demo_site import ROOT, build_site, free_port, make_change_repo, serve

LIGHTHOUSE = ROOT / "node_modules" / ".bin" / "lighthouse"
CHROMIUM = "/usr/bin/chromium"
# --no-sandbox: CI runs as root. The rest keep Chromium from calling Google on a closed network.
CHROME_FLAGS = ("--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run "
                "--disable-background-networking --disable-component-update --disable-sync --disable-default-apps")
PAGES = {"home": "", "policy": "privacy/", "changes": "privacy/changes/", "feedback": "feedback/", "manage": "api/manage"}
FORM_FACTORS = ("mobile", "desktop")
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
TARGETS = {"performance": 95, "accessibility": 100, "best-practices": 100, "seo": 100}


def lighthouse(url: str, form_factor: str, out_stem: Path) -> dict[str, Any]:
    """One Lighthouse run; writes <out_stem>.report.json and .report.html and returns the parsed JSON."""
    cmd = [str(LIGHTHOUSE), url, "--output=json", "--output=html", f"--output-path={out_stem}",
           f"--chrome-flags={CHROME_FLAGS}", "--quiet"]
    if form_factor == "desktop":
        cmd.append("--preset=desktop")
    env = {**os.environ, "CHROME_PATH": CHROMIUM}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    report = out_stem.with_name(out_stem.name + ".report.json")
    if done.returncode != 0 or not report.exists():
        raise RuntimeError(f"lighthouse failed on {url} ({form_factor}):\n{done.stderr[-2000:]}")
    return json.loads(report.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def median_run(url: str, form_factor: str, out_stem: Path, runs: int) -> dict[str, Any]:
    """Audit ``runs`` times; keep (and leave on disk as out_stem) the run with the median performance score."""
    if runs <= 1:
        return lighthouse(url, form_factor, out_stem)
    stems = [out_stem.with_name(f"{out_stem.name}-run{i}") for i in range(runs)]
    reports = [lighthouse(url, form_factor, stem) for stem in stems]
    order = sorted(range(runs), key=lambda i: reports[i]["categories"]["performance"]["score"] or 0)
    keep = order[runs // 2]
    for i, stem in enumerate(stems):
        for suffix in (".report.json", ".report.html"):
            written = stem.with_name(stem.name + suffix)
            if i == keep:
                written.replace(out_stem.with_name(out_stem.name + suffix))
            else:
                written.unlink()
    return reports[keep]


def scores(report: dict[str, Any]) -> dict[str, int | None]:
    """The four category scores, 0-100 (None when Lighthouse could not score one)."""
    cats = report["categories"]
    return {c: None if cats[c]["score"] is None else round(cats[c]["score"] * 100) for c in CATEGORIES}


def shortfalls(report: dict[str, Any]) -> list[str]:
    """The audits that cost points in a category below its target, as `category: audit-id (score)`."""
    found = []
    for name, target in TARGETS.items():
        category = report["categories"][name]
        if category["score"] is not None and round(category["score"] * 100) >= target:
            continue
        for ref in category["auditRefs"]:
            audit = report["audits"][ref["id"]]
            if ref["weight"] > 0 and audit["score"] is not None and audit["score"] < 1:
                found.append(f"{name}: {ref['id']} ({audit['score']:.2f}) {audit.get('displayValue', '')}".rstrip())
    return found


def table(rows: list[tuple[str, str, dict[str, int | None]]]) -> str:
    head = "| Page | Form factor | Performance | Accessibility | Best practices | SEO |"
    lines = [head, "|" + "---|" * (2 + len(CATEGORIES))]
    for page, form_factor, s in rows:
        lines.append(f"| {page} | {form_factor} | " + " | ".join("-" if s[c] is None else str(s[c]) for c in CATEGORIES)
                     + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build, serve, audit every page in both form factors; print the table and what missed a target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "audit", help="where the reports go")
    parser.add_argument("--page", action="append", choices=sorted(PAGES), help="audit only these pages")
    parser.add_argument("--runs", type=int, default=1, help="runs per page and form factor; the median is kept")
    args = parser.parse_args(argv)
    if not LIGHTHOUSE.exists() or not Path(CHROMIUM).exists():
        print(f"Error: need {LIGHTHOUSE} and {CHROMIUM}; run `make browser-deps`.", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    rows, missed = [], []
    with tempfile.TemporaryDirectory(prefix="policy-audit-") as tmp:
        work, port = Path(tmp), free_port()
        base_url = f"http://127.0.0.1:{port}/"
        site = build_site(make_change_repo(work / "repo"), work / "site", base_url)
        with serve(site, work, port) as server:
            for name in args.page or list(PAGES):
                for form_factor in FORM_FACTORS:
                    try:
                        report = median_run(server.base_url + PAGES[name], form_factor,
                                            args.out / f"{name}-{form_factor}", args.runs)
                    except RuntimeError as e:
                        rows.append((name, form_factor, dict.fromkeys(CATEGORIES)))
                        missed.append(f"{name} ({form_factor}) not audited: {e}")
                        continue
                    rows.append((name, form_factor, scores(report)))
                    if report.get("runtimeError"):
                        missed.append(f"{name} ({form_factor}) not audited: {report['runtimeError']['message']}")
                    missed += [f"{name} ({form_factor}) {m}" for m in shortfalls(report)]
                    print(f"audited {name} ({form_factor}): {rows[-1][2]}", file=sys.stderr, flush=True)
    print(table(rows))
    print(f"\nReports: {args.out}/<page>-<form factor>.report.html and .report.json")
    if missed:
        print("\nBelow target:\n  " + "\n  ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
