"""How two e-mail addresses are compared: one rule for everything that groups people by address.

The third-party export (reports.py) and the change notices (subscribers.py) must agree on who is one
person, or someone could be shared as "consenting" under one spelling while withdrawn under another.
"""

from __future__ import annotations


def email_key(email: str) -> str:
    """The address as compared: surrounding space dropped, case folded (Ann@Example.org is ann@example.org)."""
    return email.strip().casefold()
