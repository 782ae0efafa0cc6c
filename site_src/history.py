"""Git history of policy files, read in a fixed number of git processes for the whole build.

One `git rev-parse` (where the repository is, and whether it is shallow), one `git log` over the
first-parent line (renames detected, blob ids included) and one `git cat-file --batch` for the file
texts: three processes whether the site has one policy or five hundred. The current text of a page
is its working-tree file, which is what MkDocs builds; the history comes from commits only.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

# Spawns one process; read_history takes it as a parameter so a test can count the git processes.
Spawn = Callable[..., "subprocess.Popen[bytes]"]

FETCH_FULL_HISTORY = (
    "fetch the full history (actions/checkout with fetch-depth: 0, or `git fetch --unshallow`), "
    "or set the policy plugin option require_history: false to build without history pages"
)


class HistoryUnavailable(Exception):
    """The git history needed for change history pages cannot be read (no git, no repo, shallow clone)."""


@dataclass(frozen=True)
class Revision:
    """One commit that changed a file: the file's path and full text as of that commit."""

    commit: str
    date: datetime  # committer date (UTC): when the change landed on the published line
    path: str  # repository-relative POSIX path at that commit (differs before a rename)
    text: str
    subject: str = ""  # the commit message's first line
    # For a merge commit, the first line of its message's body: the pull request's title on GitHub and GitLab.
    merged: str | None = None


@dataclass(frozen=True)
class FileHistory:
    """Every first-parent commit that changed one file, oldest first (empty for an uncommitted file)."""

    path: Path
    revisions: tuple[Revision, ...]
    name: str = ""  # repository-relative POSIX path today; a revision with another path predates a rename


@dataclass(frozen=True)
class _Commit:
    sha: str
    date: datetime
    subject: str
    merged: str | None
    changes: list[tuple[str, str, str, str | None]]  # (status, blob, path, old path)


def _run(spawn: Spawn, args: list[str], cwd: Path) -> bytes:
    try:
        proc = spawn(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise HistoryUnavailable(f"git is not installed, so the change history cannot be read; install git, or {FETCH_FULL_HISTORY}.") from exc
    out, err = proc.communicate()
    if proc.returncode != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        detail = message[-1] if message else f"exit status {proc.returncode}"
        command = " ".join(a for a in args[:5] if not a.startswith(("-", "log.")))
        raise HistoryUnavailable(f"{cwd}: `{command}` failed ({detail}); build from a git clone and {FETCH_FULL_HISTORY}.")
    return out


def _locate(spawn: Spawn, root: Path) -> Path:
    """Return the repository top level; refuse a shallow clone, whose history would be silently wrong."""
    out = _run(spawn, ["git", "rev-parse", "--show-toplevel", "--is-shallow-repository"], root)
    toplevel, shallow = out.decode("utf-8").splitlines()[:2]
    if shallow.strip() == "true":
        raise HistoryUnavailable(f"{toplevel} is a shallow git clone, so past versions of the policies are missing; {FETCH_FULL_HISTORY}.")
    return Path(toplevel).resolve()


def locate_repository(root: Path, *, spawn: Spawn = subprocess.Popen) -> Path:
    """The top level of the git repository holding ``root``; raises HistoryUnavailable (no git, no repo, shallow)."""
    return _locate(spawn, Path(root).resolve())


# Each commit's header: \x01, hash, committer time, parents, \x02, subject, \x02, body, \x03 (then its --raw lines).
LOG_FORMAT = "--format=%x01%H %ct %P%x02%s%x02%b%x03"


def _parse_header(token: str) -> _Commit:
    token = token.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # messages are shown: no lone surrogates
    ids, _, message = token[1:].partition("\x02")
    subject, _, body = message.rpartition("\x03")[0].partition("\x02")
    sha, stamp, *parents = ids.split(" ")
    merged = None
    if len(parents) > 1:  # a merge: the body's first line names what was merged (a pull request's title)
        merged = next((line.strip() for line in body.splitlines() if line.strip()), None)
    return _Commit(sha, datetime.fromtimestamp(int(stamp), timezone.utc), " ".join(subject.split()), merged, [])


def _parse_log(raw: bytes) -> list[_Commit]:
    """Parse `git log -z --raw` with LOG_FORMAT into commits with their file changes, newest first."""
    commits: list[_Commit] = []
    tokens = raw.split(b"\0")
    i = 0
    while i < len(tokens):
        token = tokens[i].lstrip(b"\n").decode("utf-8", "surrogateescape")
        i += 1
        if token.startswith("\x01"):
            commits.append(_parse_header(token))
        elif token.startswith(":"):
            # ":100644 100644 <old blob> <new blob> R087", then one path, or two for a rename/copy.
            fields = token[1:].split(" ")
            status, blob = fields[4][0], fields[3]
            first = tokens[i].decode("utf-8", "surrogateescape")
            i += 1
            if status in "RC":
                second = tokens[i].decode("utf-8", "surrogateescape")
                i += 1
                commits[-1].changes.append((status, blob, second, first))
            else:
                commits[-1].changes.append((status, blob, first, None))
    return commits


def _read_blobs(spawn: Spawn, cwd: Path, blobs: Sequence[str]) -> dict[str, str]:
    """Read many blobs through ONE `git cat-file --batch` process."""
    unique = list(dict.fromkeys(blobs))
    if not unique:
        return {}
    proc = spawn(["git", "cat-file", "--batch"], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(("\n".join(unique) + "\n").encode("ascii"))
    if proc.returncode != 0:
        raise HistoryUnavailable(f"{cwd}: `git cat-file --batch` failed ({err.decode('utf-8', 'replace').strip()}); {FETCH_FULL_HISTORY}.")
    texts: dict[str, str] = {}
    pos = 0
    for blob in unique:
        end = out.index(b"\n", pos)
        header = out[pos:end].decode("ascii").split(" ")
        if len(header) != 3:  # "<sha> missing": a partial clone that lacks the object
            raise HistoryUnavailable(f"{cwd}: git object {blob} is missing; {FETCH_FULL_HISTORY}.")
        size = int(header[2])
        texts[blob] = out[end + 1 : end + 1 + size].decode("utf-8", "replace")
        pos = end + 1 + size + 1  # the content is followed by one LF
    return texts


class HistoryReader:
    """Reads the history in the background, so git works while MkDocs renders pages.

    Construct it early (on_config: checks the repository and starts `git log`, raising HistoryUnavailable
    at once), call request() when the policy files are known (on_files: starts `git cat-file`), and
    result() when the histories are needed. Three git processes in all, however many files.
    """

    def __init__(self, repo_root: Path, *, spawn: Spawn = subprocess.Popen) -> None:
        self._spawn = spawn
        self._root = Path(repo_root).resolve()
        self._toplevel = _locate(spawn, self._root)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-history")
        self._log = self._pool.submit(self._read_log)
        self._requests: list[Future[dict[Path, FileHistory]]] = []
        self._merged: tuple[int, dict[Path, FileHistory]] | None = None
        self.requested: set[Path] = set()

    def _read_log(self) -> list[_Commit]:
        # First parent only, merges diffed against it: a change counts from when it landed on the
        # published line, and side-branch commits that never were the published text are skipped.
        # log.showSignature in a user's config would mix gpg output into what we parse.
        args = ["git", "-c", "log.showSignature=false", "log", "--first-parent", "--diff-merges=first-parent"]
        args += ["--raw", "-M", "-z", "--no-abbrev", LOG_FORMAT]
        try:
            return _parse_log(_run(self._spawn, args, self._toplevel))
        except HistoryUnavailable as exc:
            if "does not have any commits" not in str(exc):
                raise
            return []  # a fresh repository: every file is uncommitted

    def request(self, paths: Sequence[Path]) -> None:
        """Start reading the history of `paths` (absolute, or relative to the repo_root given). Each request
        runs one `git cat-file`: ask once for every file when possible."""
        wanted: dict[str, Path] = {}
        for path in paths:
            absolute = (self._root / path).resolve()
            try:
                wanted[absolute.relative_to(self._toplevel).as_posix()] = path
            except ValueError:
                raise HistoryUnavailable(f"{absolute} is outside the git repository {self._toplevel}; move it into the repository.") from None
        self.requested.update(paths)
        self._requests.append(self._pool.submit(self._histories, wanted))

    def result(self) -> dict[Path, FileHistory]:
        """The history of each requested file, keyed by the path as given; raises HistoryUnavailable."""
        if not self._requests:
            raise RuntimeError("HistoryReader.result() called before request()")
        if self._merged is None or self._merged[0] != len(self._requests):
            merged: dict[Path, FileHistory] = {}
            for request in self._requests:
                merged.update(request.result())
            self._merged = (len(self._requests), merged)
        return self._merged[1]

    def _histories(self, wanted: dict[str, Path]) -> dict[Path, FileHistory]:
        tracking = {name: name for name in wanted}  # name at the commit being read -> name today
        found: dict[str, list[tuple[_Commit, str, str]]] = {name: [] for name in wanted}
        for commit in self._log.result():  # newest first
            for status, blob, name, old_name in commit.changes:
                today = tracking.get(name)
                if today is None or status == "D":
                    continue
                found[today].append((commit, name, blob))
                if status == "A":  # born here: older commits with this name are another file's life
                    del tracking[name]
                elif status == "R" and old_name is not None:
                    del tracking[name]
                    tracking[old_name] = today
        texts = _read_blobs(self._spawn, self._toplevel, [blob for entries in found.values() for *_, blob in entries])
        result: dict[Path, FileHistory] = {}
        for name, original in wanted.items():
            revisions = [
                Revision(c.sha, c.date, at, texts[blob], c.subject, c.merged) for c, at, blob in reversed(found[name])
            ]
            result[original] = FileHistory(path=original, revisions=tuple(revisions), name=name)
        return result


def read_history(repo_root: Path, paths: Sequence[Path], *, spawn: Spawn = subprocess.Popen) -> dict[Path, FileHistory]:
    """Return the history of each file in `paths` (absolute, or relative to `repo_root`), keyed as given.

    Follows each file back through renames (`git mv`). Raises HistoryUnavailable outside a git
    repository, in a shallow clone, or when git fails; the message says how to fetch full history.
    """
    reader = HistoryReader(repo_root, spawn=spawn)
    reader.request(paths)
    return reader.result()
