"""Reading a request body into fields: JSON, urlencoded or multipart, with limits, strict UTF-8.

The body size is already bounded by BodyLimitMiddleware; here the number of fields is bounded, files
are refused (max_files=0), and a field whose bytes are not UTF-8 is named rather than guessed at
(Starlette's parsers would quietly decode it as Latin-1 or replace it).
"""

from __future__ import annotations

import re
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import Request

from form_handler.consent.submissions import ValidationFailed, decode_json, decode_urlencoded, fields_from_pairs

MAX_FIELDS = 32  # our nine fields, plus room for what a browser adds (a named submit button, _charset_)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_PART_NAME = re.compile(rb'name="([^"\r\n]{0,64})"')


class Refused(Exception):
    """A request refused with `status`, each offending field named in `errors`."""

    def __init__(self, status: int, errors: dict[str, str], headers: dict[str, str] | None = None) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = errors
        self.headers = headers or {}


def media_type(request: Request) -> tuple[str, dict[bytes, bytes]]:
    value, params = parse_options_header(request.headers.get("content-type", ""))
    return value.decode("latin-1").lower(), params


def wants_json(request: Request) -> bool:
    """A JSON caller: it sent JSON or asked for JSON. Everyone else is a browser posting a form."""
    return media_type(request)[0] == "application/json" or "application/json" in request.headers.get("accept", "")


def _check_charset(params: dict[bytes, bytes]) -> None:
    charset = params.get(b"charset", b"utf-8").decode("latin-1").lower()
    if charset not in ("utf-8", "utf8"):
        raise Refused(415, {"content-type": f"charset {charset!r} is not supported; send UTF-8."})


def _bad_multipart_field(body: bytes, error: UnicodeDecodeError) -> str:
    # The offending bytes belong to the last part header before them.
    names = _PART_NAME.findall(body[: error.start])
    return names[-1].decode("utf-8", "replace") if names else "body"


async def read_fields(request: Request) -> tuple[bool, dict[str, Any]]:
    """(is_json, fields) of the request body; raises Refused (400, 415, 422) for an unusable body."""
    kind, params = media_type(request)
    if kind not in ("application/json", *FORM_TYPES):
        raise Refused(415, {"content-type": "Send the form as application/x-www-form-urlencoded, "
                                            "multipart/form-data or application/json."})
    body = await request.body()  # bounded by BodyLimitMiddleware; form() below reuses these bytes
    result: dict[str, Any] | ValidationFailed
    if kind == "application/json":
        result = decode_json(body)
    elif kind == "application/x-www-form-urlencoded":
        _check_charset(params)
        result = decode_urlencoded(body, max_fields=MAX_FIELDS)
    else:
        _check_charset(params)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            name = _bad_multipart_field(body, e)
            raise Refused(422 if name != "body" else 400,
                          {name: f"{name} is not valid UTF-8; send the text encoded as UTF-8."}) from None
        try:
            form = await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=len(body) + 1)
        except HTTPException as e:  # Starlette turns the parser's limits into a 400
            raise Refused(400, {"body": f"The form could not be read: {e.detail}"}) from None
        try:
            result = fields_from_pairs(form.multi_items())
        finally:
            await form.close()
    if isinstance(result, ValidationFailed):
        raise Refused(result.status, result.errors)
    return kind == "application/json", result
