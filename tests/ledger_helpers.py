"""Small builders shared by the ledger, writer and CLI tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from form_handler.ledger.sqlite.store import ConsentDraft, Ledger, Receipt

VERSION = "a" * 64


def draft(email: str | None = "ada@example.org", message: str = "Hello", *, third: bool = False,
          updates: bool = False, version: str = VERSION, page: str = "/feedback/") -> ConsentDraft:
    return ConsentDraft(
        policy_id="privacy", policy_version=version, page=page, message=message, email=email,
        consent_contact=email is not None, consent_updates=updates, consent_third_parties=third,
    )


def confirmed(ledger: Ledger, d: ConsentDraft) -> Receipt:
    """Append a consent and its confirmation, as after its owner followed the link in the mail."""
    with ledger.transaction() as txn:
        receipt = txn.append_consent(d)
        txn.append("confirmation", receipt.receipt_id, policy_id=d.policy_id)
    return receipt


def make_read_only(path: Path) -> None:
    """Make a file unwritable even for root (chattr +i), as a real read-only ledger would be."""
    os.chmod(path, 0o444)
    if os.geteuid() == 0:
        subprocess.run([shutil.which("chattr") or "chattr", "+i", str(path)], check=True)


def make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run([shutil.which("chattr") or "chattr", "-i", str(path)], check=True)
    os.chmod(path, 0o644)
