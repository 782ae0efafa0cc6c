"""The published policy-versions.json, as the service sees it: which versions of which policy exist.

The manifest is read from a path or an http(s) URL. When a submission names a version we do not know,
the manifest is read again (at most once every `min_interval` seconds) before the version is refused,
so a version CI has just published is accepted without restarting the service.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_BYTES = 5 * 1024 * 1024


class ManifestUnavailable(Exception):
    """The manifest cannot be read or understood; the service answers 503 rather than guess."""


@dataclass(frozen=True)
class PolicyEntry:
    """One policy of the manifest: its current version and every version it lists."""

    id: str
    title: str
    url: str
    current: str
    # version -> url of that version's page (relative to the site root)
    versions: dict[str, str]


def policy_records(data: bytes, source: str) -> list[dict[str, Any]]:
    """The manifest's `policies` list, each a JSON object with an id and a version; the one reader of its JSON.

    Raises ManifestUnavailable with one sentence naming the manifest and the problem."""
    try:
        listed = json.loads(data.decode("utf-8"))["policies"]
        if not isinstance(listed, list) or not all(isinstance(p, dict) and "id" in p and "version" in p for p in listed):
            raise ValueError("every policy needs an id and a version")
        return listed
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ManifestUnavailable(
            f"{source}: not a policy-versions.json with a 'policies' list of id/version entries ({e})."
        ) from None


def parse_manifest(data: bytes, source: str) -> dict[str, PolicyEntry]:
    """Read the manifest's policies; raise ManifestUnavailable with one sentence naming the problem."""
    records = policy_records(data, source)
    try:
        policies: dict[str, PolicyEntry] = {}
        for p in records:
            url = str(p.get("url", ""))
            versions = {str(v["version"]): str(v.get("url") or url) for v in p.get("versions", [])}
            versions.setdefault(str(p["version"]), url)
            policies[str(p["id"])] = PolicyEntry(
                id=str(p["id"]), title=str(p.get("title") or p["id"]), url=url,
                current=str(p["version"]), versions=versions,
            )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ManifestUnavailable(
            f"{source}: not a policy-versions.json with a 'policies' list of id/version entries ({e})."
        ) from None
    return policies


def read_source(source: str, *, timeout: float) -> bytes:
    """Fetch the manifest bytes from a file path or an http(s) URL (blocking; run it in a thread)."""
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=timeout) as response:  # noqa: S310 (scheme checked)
                data: bytes = response.read(MAX_BYTES + 1)
        else:
            with open(Path(source), "rb") as f:
                data = f.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as e:
        e.close()  # an HTTPError holds the open response
        raise ManifestUnavailable(f"Cannot read the policy manifest {source}: HTTP {e.code}.") from None
    except (OSError, ValueError) as e:
        raise ManifestUnavailable(f"Cannot read the policy manifest {source}: {e}.") from None
    if len(data) > MAX_BYTES:
        raise ManifestUnavailable(f"The policy manifest {source} is larger than {MAX_BYTES} bytes.")
    return data


class Manifest:
    """A cached manifest that re-reads itself, at a bounded rate, before refusing a version."""

    def __init__(
        self,
        source: str,
        *,
        min_interval: float = 2.0,
        timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.min_interval = min_interval
        self.timeout = timeout
        self.reads = 0  # how many times the source was read; tests bound the rate with it
        self._clock = clock
        self._policies: dict[str, PolicyEntry] | None = None
        self._error: ManifestUnavailable | None = None
        self._last_read = float("-inf")
        self._lock = asyncio.Lock()  # binds to the loop of first use: build one per app lifespan

    async def _refresh(self) -> None:
        """Read the source again unless it was read within min_interval (then keep what we have)."""
        async with self._lock:  # concurrent callers share one read
            if self._clock() - self._last_read < self.min_interval:
                return
            self._last_read = self._clock()
            self.reads += 1
            try:
                data = await asyncio.to_thread(read_source, self.source, timeout=self.timeout)
                self._policies, self._error = parse_manifest(data, self.source), None
            except ManifestUnavailable as e:
                self._error = e

    async def policies(self) -> dict[str, PolicyEntry]:
        """The policies as last read; read now if never read successfully."""
        if self._policies is None:
            await self._refresh()
        if self._policies is None:
            raise self._error or ManifestUnavailable(f"The policy manifest {self.source} was not read.")
        return self._policies

    async def check(self, policy_id: str, version: str) -> dict[str, str]:
        """Errors ({field: sentence}) for an unknown policy or version; {} when the manifest lists it.

        Raises ManifestUnavailable when the manifest cannot be read and it is needed to decide.
        """
        policies = await self.policies()
        if _knows(policies, policy_id, version):
            return {}
        await self._refresh()
        if self._error is not None:
            # A failed re-read must not turn a just-published version into a 422: say "try later".
            raise self._error
        policies = self._policies or policies
        if policy_id not in policies:
            known = ", ".join(sorted(policies)) or "none"
            return {"policy_id": f"policy_id {policy_id[:64]!r} is not a published policy (known: {known})."}
        if version not in policies[policy_id].versions:
            return {"policy_version": f"policy_version is not a published version of {policy_id}; reload the page and send again."}
        return {}


def _knows(policies: dict[str, PolicyEntry], policy_id: str, version: str) -> bool:
    entry = policies.get(policy_id)
    return entry is not None and version in entry.versions


def describe(entry: PolicyEntry, version: str) -> dict[str, Any]:
    """Title and links of one version, for the receipt page."""
    return {"title": entry.title, "url": entry.url, "version_url": entry.versions.get(version, entry.url),
            "current": version == entry.current}
