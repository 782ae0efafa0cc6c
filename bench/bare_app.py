"""The bench's baseline: a bare Starlette endpoint that reads and validates the same form as
/api/feedback (the product's own parsing) and answers 303, storing nothing.

Not part of the product; `bench/throughput.py` runs it with `uvicorn bench.bare_app:app`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from form_handler.web.bodies import Refused, read_fields
from form_handler.consent.submissions import ValidationFailed, parse_submission


async def feedback(request: Request) -> Response:
    """Parse and validate like the product, then redirect; nothing is written anywhere."""
    try:
        is_json, fields = await read_fields(request)
    except Refused as r:
        return JSONResponse({"errors": r.errors}, status_code=r.status)
    draft = parse_submission(fields, is_json=is_json)
    if isinstance(draft, ValidationFailed):
        return JSONResponse({"errors": draft.errors}, status_code=draft.status)
    return RedirectResponse("/feedback/thanks/", status_code=303)


app = Starlette(routes=[Route("/api/feedback", feedback, methods=["POST"])])
