"""Time `mkdocs build` of a 500-page policy site with 2,000 commits of history, with and without the policy plugin.

    .venv/bin/python bench/history_bench.py                 # generate, then 5 alternating builds of each variant
    .venv/bin/python bench/history_bench.py --history-only  # time the history reader, timelines, redlines alone
    .venv/bin/python bench/history_bench.py --adopt         # an adopted repository: 60 policies, 900 commits,
                                                            # ~1,000 versions from git history, bound 50%
    .venv/bin/python bench/history_bench.py --code /tmp/old # and the plugin of another copy of the code, in turn

The site is generated in a temporary folder (or --dir) as one `git fast-import` stream, so making 2,000 commits
takes seconds, not 2,000 `git commit` calls. Builds alternate (plain, policy, plain, ...) after one unmeasured
warm-up build of each, so that a busy machine slows both variants alike. Both wall-clock and CPU time (mkdocs plus the
history worker and git processes it ran) are reported; exit status 1 when the plugin's overhead on the median
wall-clock time is above --max-overhead percent (the bound is about how long a build takes; the plugin spends
CPU on a second core to keep it short, so its CPU overhead is larger and is printed beside it). With --code, the
policy variant of each copy of the code named (e.g. `git worktree add /tmp/old <commit>`) is built too, in the same
rounds (plain first, then the policy builds in an order that rotates from round to round), and the two copies are
compared round by round; the verdict stays this checkout's overhead against the plain build.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

WORDS = (
    "we may use collect store share disclose personal information data about you your visit our web site service "
    "cookies session statistics aggregate third parties consent email address request access correct delete "
    "retain period security procedures firewall servers authorised personnel confidential policy purpose law "
    "regulation contact us change notice update provide process account records apply where necessary reasonable"
).split()
HEADINGS = ["What we collect", "How we use it", "Who we share it with", "How long we keep it", "Your choices", "Contact"]
CONFIG = """\
site_name: Bench policies
site_url: https://policies.example.org/
theme:
  name: material
  font: false
  features:
    - navigation.prune
plugins:
  - search
{extra}
markdown_extensions:
  - toc:
      permalink: true
  - attr_list
  - md_in_html
"""


@dataclass
class Page:
    path: str
    policy_id: str
    title: str
    paragraphs: list[str]
    changes: list[str] = field(default_factory=list)  # YAML lines of the records, newest first

    def render(self) -> str:
        meta = [f"title: {self.title}", f"policy_id: {self.policy_id}"]
        if self.changes:
            meta += ["changes:", *self.changes]
        return "---\n" + "\n".join(meta) + "\n---\n\n" + "\n\n".join([f"# {self.title}", *self.paragraphs]) + "\n"


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(10, 22))
    return " ".join(words).capitalize() + "."


def _paragraphs(rng: random.Random) -> list[str]:
    out: list[str] = []
    for heading in rng.sample(HEADINGS, rng.randint(3, 5)):
        out.append(f"## {heading}")
        out += [" ".join(_sentence(rng) for _ in range(rng.randint(2, 5))) for _ in range(rng.randint(1, 3))]
    return out


def _edit(rng: random.Random, page: Page | Adopted) -> None:
    """A writer's edit: replace, add or drop one sentence, or add a paragraph (what policy changes look like)."""
    choices = [i for i, p in enumerate(page.paragraphs) if not p.startswith("#")]
    index = rng.choice(choices)
    sentences = page.paragraphs[index].split(". ")
    kind = rng.random()
    if kind < 0.15:
        page.paragraphs.insert(index + 1, " ".join(_sentence(rng) for _ in range(rng.randint(2, 4))))
        return
    at = rng.randrange(len(sentences))
    if kind < 0.6:
        sentences[at] = _sentence(rng).rstrip(".")
    elif kind < 0.85 or len(sentences) == 1:
        sentences.insert(at, _sentence(rng).rstrip("."))
    else:
        del sentences[at]
    page.paragraphs[index] = ". ".join(sentences).rstrip(".") + "."


def _data(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"data %d\n" % len(raw) + raw + b"\n"


def generate(root: Path, pages: int, commits: int, span_days: int = 1825, seed: int = 7) -> int:
    """Write a git repository with `pages` policy pages and `commits` commits over `span_days` up to today;
    return the last commit's time (the builds' SOURCE_DATE_EPOCH)."""
    rng = random.Random(seed)
    site = [Page(f"docs/area-{i // 50:02d}/policy-{i:03d}.md", f"policy-{i:03d}", f"Policy {i:03d}", _paragraphs(rng))
            for i in range(pages)]
    step = timedelta(days=span_days) / commits
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - step * commits
    stream = bytearray()
    for n in range(commits):
        when = start + step * n
        lines: list[bytes] = []
        if n == 0:
            touched = site
            lines += [b"M 100644 inline docs/index.md\n" + _data("# Bench policies\n\nGenerated by bench/history_bench.py.\n")]
        elif rng.random() < 0.01:  # a page moved with `git mv`: no text change, no record
            page = rng.choice(site)
            old, page.path = page.path, page.path.replace(".md", "-moved.md")
            lines.append(f'R "{old}" "{page.path}"\n'.encode())
            touched = []
        else:
            touched = rng.sample(site, rng.choice((1, 1, 1, 2, 3)))
        for page in touched if n else []:
            _edit(rng, page)
            effective = when.date() + timedelta(days=rng.choice((0, 0, 30)))
            page.changes[:0] = [
                f"  - date: {when.date().isoformat()}",
                f"    summary: Revised {rng.choice(HEADINGS).lower()} ({n}).",
                f"    effective: {effective.isoformat()}",
                f"    material: {'true' if rng.random() < 0.8 else 'false'}",
            ]
        lines += [b"M 100644 inline " + p.path.encode() + b"\n" + _data(p.render()) for p in touched]
        stream += b"commit refs/heads/main\nmark :%d\n" % (n + 1)
        stream += b"committer Bench <bench@example.org> %d +0000\n" % int(when.timestamp())
        stream += _data(f"Change {n}")
        stream += b"from :%d\n" % n if n else b""
        stream += b"".join(lines) + b"\n"
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input=bytes(stream), check=True)
    subprocess.run(["git", "reset", "-q", "--hard"], cwd=root, check=True)
    (root / "mkdocs-plain.yml").write_text(CONFIG.format(extra=""))
    (root / "mkdocs-policy.yml").write_text(CONFIG.format(extra="  - policy"))
    return int((start + step * (commits - 1)).timestamp())


@dataclass
class Adopted:
    """A page of an adopted repository: no change records, usually no policy_id (the `policies` patterns find it)."""

    path: str
    title: str
    paragraphs: list[str]
    policy_id: str | None = None  # pinned: only such pages may be renamed
    description: str = ""
    changes: list[str] = field(default_factory=list)  # records, after the adoption date

    def render(self) -> str:
        meta = [f"title: {self.title}"] + ([f"policy_id: {self.policy_id}"] if self.policy_id else [])
        meta += [f"description: {self.description}"] if self.description else []
        meta += ["changes:", *self.changes] if self.changes else []
        return "---\n" + "\n".join(meta) + "\n---\n\n" + "\n\n".join([f"# {self.title}", *self.paragraphs]) + "\n"


def generate_adopted(root: Path, pages: int, commits: int, span_days: int = 300, seed: int = 11) -> tuple[int, str]:
    """Write a repository as teams keep policies in git before they adopt this tool: `pages` policy pages without
    change records, `commits` commits in all over `span_days` up to today, several a day. On the published line
    most commits edit the text of one to three pages, 3% change front matter only, 1% rename a page (one whose
    policy_id is pinned, as the plugin requires), and every tenth change is a pull request: two or three commits
    on a branch, merged with GitHub's merge message. The last 2% of the commits come after the adoption date and
    carry change records. Returns (the last commit's time, the adoption date)."""
    rng = random.Random(seed)
    site = [
        Adopted(f"docs/policies/area-{i // 12:02d}/policy-{i:03d}.md", f"Policy {i:03d}", _paragraphs(rng),
                f"policy-{i:03d}" if i % 10 == 0 else None)
        for i in range(pages)
    ]
    step = timedelta(days=span_days) / commits
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - step * commits
    adopted_at = commits - max(1, commits // 50)
    adopted = (start + step * (adopted_at - 1)).date()
    stream = bytearray()
    mark = 0

    def commit(branch: str, when: datetime, message: str, parent: int, touched: list[Adopted], extra: bytes = b"",
               merge: int | None = None) -> int:
        nonlocal mark
        mark += 1
        stream.extend(b"commit refs/heads/%s\nmark :%d\n" % (branch.encode(), mark))
        stream.extend(b"committer Bench <bench@example.org> %d +0000\n" % int(when.timestamp()))
        stream.extend(_data(message))
        stream.extend(b"from :%d\n" % parent if parent else b"")
        stream.extend(b"merge :%d\n" % merge if merge else b"")
        stream.extend(extra)
        stream.extend(b"".join(b"M 100644 inline " + p.path.encode() + b"\n" + _data(p.render()) for p in touched))
        stream.extend(b"\n")
        return mark

    when = start
    head = commit("main", when, "Add the policies", 0, site, b"M 100644 inline docs/index.md\n" + _data("# Bench policies\n"))
    made, branches = 1, 0
    previous: list[Adopted] = []
    while made < commits:
        when = start + step * made
        roll = rng.random()
        if roll < 0.03:  # front matter only: not a version
            page = rng.choice(site)
            page.description = f"Reviewed in change {made}."
            head = commit("main", when, f"Describe {page.title}", head, [page])
            made += 1
        elif roll < 0.04:  # a pinned page moved to another folder
            page = rng.choice([p for p in site if p.policy_id])
            old, page.path = page.path, page.path.replace("/area-", "/moved-area-", 1)
            head = commit("main", when, f"Move {page.title}", head, [], f'R "{old}" "{page.path}"\n'.encode())
            made += 1
        elif roll < 0.14 and made + 3 < adopted_at:  # a pull request: commits on a branch, then the merge
            branches += 1
            touched = rng.sample(site, rng.choice((1, 1, 2)))
            tip = head
            for n in range(rng.choice((2, 3))):
                for page in touched:
                    _edit(rng, page)
                tip = commit(f"pr-{branches}", start + step * made, f"Work on {touched[0].title} ({n + 1})", tip, touched)
                made += 1
            head = commit("main", start + step * made, f"Merge pull request #{branches} from staff/pr-{branches}\n\n"
                          f"Revise {touched[0].title}", head, touched, merge=tip)
            made += 1
        else:
            # Several edits of one text on one day happen: a fifth of the time, the page edited just before.
            touched = previous if previous and rng.random() < 0.2 else rng.sample(site, rng.choice((1, 1, 1, 2, 2)))
            for page in touched:
                _edit(rng, page)
                if made >= adopted_at:
                    page.changes[:0] = [f"  - date: {when.date().isoformat()}", f"    summary: Revised ({made})."]
            head = commit("main", when, f"Revise {', '.join(p.title for p in touched)}", head, touched)
            made += 1
            previous = touched
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input=bytes(stream), check=True)
    subprocess.run(["git", "reset", "-q", "--hard"], cwd=root, check=True)
    for ref in range(1, branches + 1):
        subprocess.run(["git", "branch", "-q", "-D", f"pr-{ref}"], cwd=root, check=True)
    (root / "mkdocs-plain.yml").write_text(CONFIG.format(extra=""))
    options = f'  - policy:\n      policies: ["policies/**/*.md"]\n      adopted: {adopted.isoformat()}'
    (root / "mkdocs-policy.yml").write_text(CONFIG.format(extra=options))
    return int(when.timestamp()), adopted.isoformat()


def time_core(root: Path, adopted: str | None = None) -> None:
    """Time the pure core on every policy page: the git history read, the timelines, the redlines."""
    from site_src.history import read_history
    from site_src.records import load_meta, parse_changes
    from site_src.redline import redline_html
    from site_src.timeline import build_timeline
    from site_src.versions import split_front_matter

    paths = sorted(p.relative_to(root) for p in (root / "docs").rglob("policy-*.md"))
    sources = {p: (root / p).read_text(encoding="utf-8") for p in paths}
    records = {p: parse_changes(load_meta(split_front_matter(s)[0], str(p)).get("changes"), str(p)) for p, s in sources.items()}
    began = time.perf_counter()
    histories = read_history(root, paths)
    read = time.perf_counter()
    day = None if adopted is None else datetime.fromisoformat(adopted).date()
    timelines = [build_timeline(histories[p], records[p], sources[p], f"{p.stem}/", day) for p in paths]
    tied = time.perf_counter()
    pairs = [(c.before, c.after) for t in timelines for c in t.changes if c.before is not None]
    for before, after in pairs:
        redline_html(before, after)
    done = time.perf_counter()
    revisions = sum(len(h.revisions) for h in histories.values())
    versions = sum(len(t.versions) for t in timelines)
    print(f"read_history: {len(paths)} files, {revisions} revisions in {read - began:.2f} s")
    print(f"build_timeline: {versions} versions, {sum(t.unrecorded_diff is not None for t in timelines)} unrecorded edits in {tied - read:.2f} s")
    print(f"redline_html: {len(pairs)} redlines in {done - tied:.2f} s")


def build(root: Path, variant: str, epoch: int, out: str, code: Path | None = None) -> tuple[float, float]:
    """Build one variant into the folder `out`, with the site_src of `code` when given; return (wall seconds, CPU
    seconds of mkdocs and the git processes it waited for)."""
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), NO_MKDOCS_2_WARNING="1")
    if code is not None:  # ahead of the installed (editable) package, whose finder comes after sys.path
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH")) if p)
    args = [sys.executable, "-m", "mkdocs", "build", "-q", "-f", f"mkdocs-{variant}.yml", "-d", out]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(args, cwd=root, env=env, check=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


class Outputs:
    """Where each build writes. CI builds once, into a folder that does not exist yet, on a disk where nothing
    was just deleted: by default every build gets a fresh folder and all are removed at the end. With
    ``clean_before`` each variant reuses one folder, emptied (outside the timing) before each build, as a
    writer's repeated local builds do: on ext4 the inodes of thousands of just-deleted files make new files
    slower to create for a few minutes (bench/README.md), which then weighs on the variant that writes more."""

    def __init__(self, root: Path, clean_before: bool) -> None:
        self.root = root
        self.clean_before = clean_before
        self.made: list[Path] = []

    def next(self, variant: str) -> str:
        name = f"site-{variant}" if self.clean_before else f"site-{variant}-{len(self.made)}"
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        self.made.append(path)
        return name

    def remove(self) -> None:
        for path in self.made:
            shutil.rmtree(path, ignore_errors=True)


def check_code(code: Path, root: Path) -> None:
    """Refuse a copy of the code that its builds (run in `root`) would not import: the installed package instead."""
    env = dict(os.environ, PYTHONPATH=str(code))
    found = subprocess.run([sys.executable, "-c", "import site_src; print(site_src.__file__)"], cwd=root, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not found or Path(found).resolve().parent != (code / "site_src").resolve():
        raise SystemExit(f"Error: --code {code}: its builds would import site_src from {found or 'nowhere'}; "
                         "name a folder that holds site_src/ (e.g. one made by git worktree add).")


def _config(variant: str) -> str:
    """The configuration a variant builds: mkdocs-plain.yml, or mkdocs-policy.yml for every copy of the code."""
    return "plain" if variant == "plain" else "policy"


def _summary(name: str, times: list[float], width: int = 7) -> str:
    spread = max(times) - min(times)
    return f"{name:{width}} median {statistics.median(times):6.2f} s   min {min(times):6.2f}   max {max(times):6.2f}   spread {spread:5.2f}"


def _overhead(times: dict[str, list[float]], variant: str = "policy") -> float:
    return 100 * (statistics.median(times[variant]) / statistics.median(times["plain"]) - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adopt", action="store_true",
                        help="an adopted repository (generate_adopted): defaults 60 pages, 900 commits, 300 days, bound 50%%")
    parser.add_argument("--pages", type=int, help="default 500 (60 with --adopt)")
    parser.add_argument("--commits", type=int, help="default 2000 (900 with --adopt)")
    parser.add_argument("--span-days", type=int, help="the history covers this many days up to today; default 1825 (300 with --adopt)")
    parser.add_argument("--runs", type=int, default=5, help="measured builds of each variant")
    parser.add_argument("--max-overhead", type=float, help="percent; exit 1 above it; default 15 (50 with --adopt)")
    parser.add_argument("--dir", type=Path, help="generate the repository here (must not exist) and keep it; the builds' output folders are removed all the same")
    parser.add_argument("--history-only", action="store_true", help="time the history reader and core alone, no builds")
    parser.add_argument("--clean-before", action="store_true",
                        help="reuse one output folder per variant, emptied before each build (see Outputs)")
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="another copy of the code (a folder holding site_src/) whose policy builds run in turn with this one's")
    options = parser.parse_args()
    options.code = [code.resolve() for code in options.code]
    for name, plain, adopt in (("pages", 500, 60), ("commits", 2000, 900), ("span_days", 1825, 300), ("max_overhead", 15.0, 50.0)):
        if getattr(options, name) is None:
            setattr(options, name, adopt if options.adopt else plain)
    with tempfile.TemporaryDirectory(prefix="policy-bench-") as tmp:
        root = options.dir or Path(tmp) / "site"
        began = time.perf_counter()
        adopted = None
        if options.adopt:
            epoch, adopted = generate_adopted(root, options.pages, options.commits, options.span_days)
        else:
            epoch = generate(root, options.pages, options.commits, options.span_days)
        print(f"generated {options.pages} pages, {options.commits} commits in {root} ({time.perf_counter() - began:.1f} s)"
              + (f", adopted {adopted}" if adopted else ""))
        time_core(root, adopted)
        if options.history_only:
            return 0
        for code in options.code:
            check_code(code, root)
        # The code each variant's plugin comes from: None, whatever mkdocs imports (this checkout when installed).
        codes: dict[str, Path | None] = {"plain": None, "policy": ROOT if options.code else None}
        codes.update({f"policy-{n}": code for n, code in enumerate(options.code, 1)})
        policies = [variant for variant in codes if variant != "plain"]
        for variant, code in codes.items():
            print(f"{variant}: {'no policy plugin' if variant == 'plain' else code or 'the installed site_src'}")
        print(f"load average before the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        outputs = Outputs(root, options.clean_before)
        for variant, code in codes.items():
            build(root, _config(variant), epoch, outputs.next(variant), code)  # warm-up: file cache, .pyc files
        wall: dict[str, list[float]] = {variant: [] for variant in codes}
        cpu: dict[str, list[float]] = {variant: [] for variant in codes}
        try:
            for run in range(options.runs):
                # Plain first, as always; the policy builds' order rotates, so no copy of the code always goes first.
                turn = run % len(policies)
                for variant in ["plain", *policies[turn:], *policies[:turn]]:
                    seconds, cpu_seconds = build(root, _config(variant), epoch, outputs.next(variant), codes[variant])
                    wall[variant].append(seconds)
                    cpu[variant].append(cpu_seconds)
        finally:
            outputs.remove()
        print(f"output folders: {'one per variant, emptied before each build' if options.clean_before else 'a fresh one per build, removed at the end'}")
        width = max(7, *(len(variant) for variant in codes))
        for label, times in (("wall clock", wall), ("CPU (user+sys)", cpu)):
            print(f"{label}, {options.runs} alternating runs each:")
            for variant in codes:
                print(_summary(variant, times[variant], width))
            for variant in policies:
                of = "" if variant == "policy" else f" ({variant}, {codes[variant]})"
                print(f"overhead of the policy plugin{of}: {_overhead(times, variant):+.1f}% (bound {options.max_overhead:.0f}%)")
                # Each policy build against the plain build of its round: this machine's speed drifts over
                # minutes, and a round shares the drift.
                pairs = [100 * (b / a - 1) for a, b in zip(times["plain"], times[variant])]
                print(f"  pair by pair: median {statistics.median(pairs):+.1f}%, min {min(pairs):+.1f}%, max {max(pairs):+.1f}%")
            for variant in policies[1:]:
                # This checkout against the other copy, build by build in the same round.
                gaps = [a - b for a, b in zip(times["policy"], times[variant])]
                ratios = [100 * (a / b - 1) for a, b in zip(times["policy"], times[variant])]
                print(f"  head to head, policy minus {variant} round by round: median {statistics.median(gaps):+.2f} s "
                      f"({statistics.median(ratios):+.1f}%), min {min(gaps):+.2f} s, max {max(gaps):+.2f} s")
        load = os.getloadavg()
        print(f"load average after the runs: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
        # Wall clock decides: the bound is about how long a build takes. Alternating runs share the machine's load.
        verdict = _overhead(wall) <= options.max_overhead
        print(f"{'PASS' if verdict else 'FAIL'}: wall-clock overhead {_overhead(wall):+.1f}% (bound {options.max_overhead:.0f}%)")
        return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
