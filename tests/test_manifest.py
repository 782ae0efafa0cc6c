"""The policy manifest: read from a file or over HTTP, re-read (at a bounded rate) before refusing."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from form_handler.consent.manifest import Manifest, ManifestUnavailable, parse_manifest

OLD, NEW, NEWER = "1" * 64, "2" * 64, "3" * 64


def write_manifest(path: Path, current: str, past: tuple[str, ...] = ()) -> None:
    versions = [{"version": v, "effective": "2026-01-01", "url": f"privacy/versions/{v[:4]}/", "current": False}
                for v in past]
    doc = {"policies": [{"id": "privacy", "title": "Privacy Policy", "url": "privacy/", "version": current,
                         "changes": [], "versions": versions}]}
    path.write_text(json.dumps(doc), encoding="utf-8")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def check(manifest: Manifest, policy_id: str, version: str) -> dict[str, str]:
    return asyncio.run(manifest.check(policy_id, version))


def test_current_and_past_versions_are_known(tmp_path: Path) -> None:
    write_manifest(tmp_path / "m.json", NEW, past=(OLD,))
    manifest = Manifest(str(tmp_path / "m.json"))
    assert check(manifest, "privacy", NEW) == {} and check(manifest, "privacy", OLD) == {}
    assert "policy_version" in check(manifest, "privacy", NEWER)
    assert "policy_id" in check(manifest, "cookies", NEW)


def test_newly_published_version_is_accepted_without_restart(tmp_path: Path) -> None:
    clock = Clock()
    write_manifest(tmp_path / "m.json", OLD)
    manifest = Manifest(str(tmp_path / "m.json"), clock=clock)
    assert check(manifest, "privacy", OLD) == {}
    write_manifest(tmp_path / "m.json", NEW, past=(OLD,))
    clock.now += 2.5
    assert check(manifest, "privacy", NEW) == {} and check(manifest, "privacy", OLD) == {}


def test_rereads_are_at_most_one_per_interval(tmp_path: Path) -> None:
    clock = Clock()
    write_manifest(tmp_path / "m.json", OLD)
    manifest = Manifest(str(tmp_path / "m.json"), clock=clock, min_interval=2.0)
    for _ in range(50):
        assert "policy_version" in check(manifest, "privacy", NEWER)
        clock.now += 0.1  # 5 s in all
    assert 2 <= manifest.reads <= 4
    write_manifest(tmp_path / "m.json", NEWER)
    assert "policy_version" in check(manifest, "privacy", NEWER)  # read 0.1 s ago: not yet
    clock.now += 2.0
    assert check(manifest, "privacy", NEWER) == {}


def test_known_versions_need_no_reread(tmp_path: Path) -> None:
    write_manifest(tmp_path / "m.json", OLD)
    manifest = Manifest(str(tmp_path / "m.json"), min_interval=0)
    for _ in range(10):
        check(manifest, "privacy", OLD)
    assert manifest.reads == 1


@pytest.mark.parametrize("content", [None, "{not json", '{"policies": [{"title": "no id"}]}', '["x"]'])
def test_missing_or_broken_manifest_is_unavailable(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "m.json").write_text(content, encoding="utf-8")
    with pytest.raises(ManifestUnavailable, match="m.json"):
        check(Manifest(str(tmp_path / "m.json")), "privacy", OLD)


def test_failed_reread_is_unavailable_not_unknown(tmp_path: Path) -> None:
    clock = Clock()
    write_manifest(tmp_path / "m.json", OLD)
    manifest = Manifest(str(tmp_path / "m.json"), clock=clock)
    check(manifest, "privacy", OLD)
    (tmp_path / "m.json").write_text("{broken", encoding="utf-8")
    clock.now += 3
    with pytest.raises(ManifestUnavailable):
        check(manifest, "privacy", NEW)
    assert check(manifest, "privacy", OLD) == {}  # what is known stays known


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_manifest_over_http_is_reread_after_publish(http_dir: tuple[Path, str]) -> None:
    root, base = http_dir
    clock = Clock()
    write_manifest(root / "policy-versions.json", OLD)
    manifest = Manifest(f"{base}/policy-versions.json", clock=clock)
    assert check(manifest, "privacy", OLD) == {}
    write_manifest(root / "policy-versions.json", NEW, past=(OLD,))
    clock.now += 2
    assert check(manifest, "privacy", NEW) == {} and manifest.reads == 2


def test_manifest_url_that_answers_404_is_unavailable(http_dir: tuple[Path, str]) -> None:
    _, base = http_dir
    with pytest.raises(ManifestUnavailable, match="404"):
        check(Manifest(f"{base}/missing.json"), "privacy", OLD)


def test_parse_manifest_maps_versions_to_their_pages() -> None:
    doc = {"policies": [{"id": "privacy", "url": "privacy/", "version": NEW,
                         "versions": [{"version": OLD, "url": "privacy/versions/2026-01-01/"}]}]}
    entry = parse_manifest(json.dumps(doc).encode(), "m.json")["privacy"]
    assert entry.versions == {OLD: "privacy/versions/2026-01-01/", NEW: "privacy/"} and entry.title == "privacy"
