"""The OpenAPI 3.1 description of the service, written by hand as data.

tests/test_app.py checks that every route of the app is described here and nothing else is, so this
cannot drift from app.py without a failing test.
"""

from __future__ import annotations

from typing import Any

from form_handler.web.bodies import MAX_FIELDS
from form_handler.web.limits import ADMIN_FAILURES_PER_MINUTE
from form_handler.web.mail_routes import OPENAPI_PATHS as MAIL_LINK_PATHS
from form_handler.web.selfservice_routes import OPENAPI_PATHS as SELF_SERVICE_PATHS
from form_handler.settings import Settings
from form_handler.consent.submissions import EMAIL_MAX, ID_MAX, MESSAGE_MAX, PAGE_MAX


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(description: str, *, retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Errors")}, "text/html": {"schema": {"type": "string"}}},
    }
    if retry:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}
    return response


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_TICK = {"type": "string", "enum": ["on", "true", "1", "yes", "off", "false", "0", "no", ""],
         "description": "A tick box: any of on/true/1/yes means ticked; leaving it out means not ticked."}
_TEXT_FIELDS: dict[str, Any] = {
    "message": {"type": "string", "minLength": 1, "maxLength": MESSAGE_MAX,
                "description": f"Required; 1 to {MESSAGE_MAX} characters after trimming."},
    "email": {"type": "string", "maxLength": EMAIL_MAX, "description": "Optional; a plain address."},
    "policy_id": {"type": "string", "minLength": 1, "maxLength": ID_MAX, "description": "Id of a published policy."},
    "policy_version": {"type": "string", "minLength": 1, "maxLength": ID_MAX,
                       "description": "A version the published policy-versions.json lists (current or past)."},
    "page": {"type": "string", "maxLength": PAGE_MAX, "description": "Path the form was sent from, e.g. /feedback/."},
    "website": {"type": "string", "maxLength": 0, "description": "Honeypot: must stay empty (filled: 400)."},
}
_CONSENTS = ("consent_contact", "consent_updates", "consent_third_parties")
_CONSENT_TEXT = {
    "consent_contact": "Contact me about my feedback (needs email).",
    "consent_updates": "E-mail me when the policies change (needs email; starts once the address is confirmed).",
    "consent_third_parties": "My email address may be passed to third parties (once the address is confirmed).",
}
_WITHDRAW_FIELDS = {
    "receipt_id": {"type": "string", "minLength": 1, "maxLength": 256},
    "withdraw_token": {"type": "string", "minLength": 1, "maxLength": 256},
}

SCHEMAS: dict[str, Any] = {
    "Errors": {"type": "object", "required": ["errors"], "properties": {
        "errors": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "Each offending field (or body, origin, ledger...) with one sentence."}}},
    "FeedbackJSON": {
        "type": "object", "required": ["message", "policy_id", "policy_version"], "additionalProperties": False,
        "description": "Unknown fields are refused (422), so a misspelt consent cannot pass unnoticed.",
        "properties": {**_TEXT_FIELDS, **{c: {"type": "boolean", "description": _CONSENT_TEXT[c]} for c in _CONSENTS}},
    },
    "FeedbackForm": {
        "type": "object", "required": ["message", "policy_id", "policy_version"], "maxProperties": MAX_FIELDS,
        "description": "Fields a browser adds (a submit button's name) are ignored and never stored.",
        "properties": {**_TEXT_FIELDS, **{c: {**_TICK, "description": _CONSENT_TEXT[c]} for c in _CONSENTS}},
    },
    "Receipt": {
        "type": "object",
        "required": ["receipt_id", "recorded_at", "policy_id", "policy_version", *_CONSENTS, "withdraw_token"],
        "properties": {
            "receipt_id": {"type": "string"},
            "recorded_at": {"type": "string", "format": "date-time", "description": "UTC, ISO-8601 with Z."},
            "policy_id": {"type": "string"}, "policy_version": {"type": "string"},
            **{c: {"type": "boolean"} for c in _CONSENTS},
            "withdraw_token": {"type": "string", "description": "Shown this once; only its sha256 is stored."},
            "entry_hash": {"type": "string", "description": "Hash of the ledger entry that holds this consent."},
            "withdraw_url": {"type": "string"},
            # The receipt page's words, for a receipt shown in place (web/pages.py receipt_words).
            "policy_title": {"type": "string"}, "version_url": {"type": "string"}, "current": {"type": "boolean"},
            "consent_sentences": {"type": "array", "items": {"type": "string"}},
            "receipt_file_url": {"type": "string"}, "manage_url": {"type": "string"},
        },
    },
    "Withdraw": {"type": "object", "required": ["receipt_id", "withdraw_token"], "additionalProperties": False,
                 "properties": _WITHDRAW_FIELDS},
    "Withdrawn": {"type": "object", "required": ["receipt_id", "withdrawn", "withdrawn_at"], "properties": {
        "receipt_id": {"type": "string"}, "withdrawn": {"const": True},
        "withdrawn_at": {"type": "string", "format": "date-time"}}},
    "Checkpoint": {"type": "object", "required": ["count", "head", "at"], "properties": {
        "count": {"type": "integer", "minimum": 0}, "head": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "at": {"type": "string", "format": "date-time"}}},
    "Stats": {"type": "object", "description": "Aggregate counts; any count below min_count is null or left out.",
              "properties": {"min_count": {"type": "integer"}}, "additionalProperties": True},
    "Health": {"type": "object", "required": ["status"], "properties": {
        "status": {"enum": ["ok", "unavailable"]}, "ledger": {"enum": ["ok", "unavailable"]},
        "manifest": {"enum": ["ok", "unavailable"]}, "entries": {"type": "integer"}}},
}

_POST_REFUSALS = {
    "400": _errors("Unreadable body (bad JSON, too many fields, a file) or a filled honeypot."),
    "403": _errors("An Origin header that is not the service's own or an allowed origin."),
    "408": _errors("The body did not fully arrive within 10 seconds (the connection is closed)."),
    "413": _errors("Body larger than POLICY_SITE_MAX_BODY bytes."),
    "415": _errors("Another content type, or a charset other than UTF-8."),
    "422": _errors("Offending fields, each named (including an unknown policy version)."),
    "429": _errors("More than POLICY_SITE_RATE_LIMIT submissions from one client in a minute.", retry=True),
    "503": _errors("The ledger (or the policy manifest) cannot be used now; nothing was stored.", retry=True),
}


def _body(json_schema: str, form_schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {
        "application/json": {"schema": _ref(json_schema)},
        "application/x-www-form-urlencoded": {"schema": form_schema},
        "multipart/form-data": {"schema": form_schema},
    }}


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document served at /api/openapi.json."""
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Policy Site feedback service", "version": "1",
                 "description": "Feedback and consent, recorded in a tamper-evident ledger. No cookies; "
                                "no IP addresses stored. JSON callers (JSON body or Accept: application/json) "
                                "get JSON; plain form posts get HTML pages with the same status codes."},
        "servers": [{"url": settings.base_url}],
        "paths": {
            "/api/feedback": {"post": {
                "summary": "Send feedback and consent to the policy version shown.",
                "requestBody": _body("FeedbackJSON", _ref("FeedbackForm")),
                "responses": {
                    "200": {"description": "Plain form post: the HTML receipt page.", "content": html},
                    "201": _json("JSON caller: the receipt.", _ref("Receipt")), **_POST_REFUSALS},
            }},
            "/api/withdraw": {"post": {
                "summary": "Withdraw every consent of one receipt.",
                "requestBody": _body("Withdraw", _ref("Withdraw")),
                "responses": {
                    "200": {"description": "Withdrawn (JSON, or an HTML confirmation page).",
                            "content": {"application/json": {"schema": _ref("Withdrawn")}, **html}},
                    "403": _errors("Origin not allowed, or the withdraw token does not match the receipt."),
                    "404": _errors("No such receipt."),
                    **{k: v for k, v in _POST_REFUSALS.items() if k != "403"}},
            }},
            "/api/stats": {"get": {"summary": "Aggregate counts only (counts below 5 left out or null).",
                                   "responses": {"200": _json("Counts.", _ref("Stats")),
                                                 "503": _errors("The ledger cannot be read.")}}},
            "/api/export": {"get": {
                "summary": "Stream the ledger (admin).",
                "security": [{"admin": []}],
                "parameters": [
                    {"name": "format", "in": "query", "schema": {"enum": ["jsonl", "csv"], "default": "jsonl"}},
                    {"name": "third_party", "in": "query", "schema": {"enum": ["0", "1"], "default": "0"},
                     "description": "1: only email addresses whose confirmed third-party consent stands."}],
                "responses": {
                    "200": {"description": "JSON Lines, or CSV safe against formula injection.", "content": {
                        "application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}}},
                    "401": _errors("Missing or wrong admin token."),
                    "404": _errors("Admin routes are off (no POLICY_SITE_ADMIN_TOKEN)."),
                    "422": _errors("Unknown format."),
                    "429": _errors(f"More than {ADMIN_FAILURES_PER_MINUTE} wrong tokens from this client within a "
                                   "minute; until the minute passes every token is refused.", retry=True),
                    "503": _errors("The ledger cannot be read (answered before any row is sent).")},
            }},
            "/api/healthz": {"get": {"summary": "Is the ledger readable and the manifest available?",
                                     "responses": {"200": _json("Healthy.", _ref("Health")),
                                                   "503": _json("Unhealthy.", _ref("Health"))}}},
            "/api/ledger/head": {"get": {"summary": "The current checkpoint: entry count and head hash.",
                                         "responses": {"200": _json("Checkpoint.", _ref("Checkpoint")),
                                                       "503": _errors("The ledger cannot be read.")}}},
            "/api/openapi.json": {"get": {"summary": "This document.",
                                          "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})}}},
            "/api/pages.css": {"get": {"summary": "Stylesheet of the service's pages.", "responses": {
                "200": {"description": "CSS.", "content": {"text/css": {"schema": {"type": "string"}}}}}}},
            **MAIL_LINK_PATHS,  # the pages behind links in our e-mails (form_handler/mail_routes.py)
            **SELF_SERVICE_PATHS,  # manage, the receipt file, "what do you hold about me?" (selfservice_routes.py)
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer",
                                          "description": "POLICY_SITE_ADMIN_TOKEN."}},
        },
    }
