"""Where each signed e-mail link points: one path per purpose, used by the mails and by the routes behind them."""

from __future__ import annotations

from form_handler.consent.tokens import Purpose

# The page behind each purpose's link (form_handler/web/mail_routes.py serves them; GET shows, POST records).
PATHS: dict[str, str] = {
    "confirm": "/api/confirm",
    "reconsent": "/api/reconsent",
    "withdraw": "/api/withdraw-consent",
    "unsubscribe": "/api/unsubscribe",
}


def url(base_url: str, purpose: Purpose, token: str) -> str:
    """The link a mail carries: the service's base URL, the purpose's path, the signed token."""
    return f"{base_url}{PATHS[purpose]}?token={token}"
