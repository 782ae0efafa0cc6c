"""The bench's baseline: a bare Starlette endpoint that reads and validates the same form as
/api/feedback (the product's own parsing) and answers 303, storing nothing.

Not part of the product; `bench/throughput.py` runs it with `uvicorn bench.bare_app:app`, and
bench/skeleton_app.py adds the least a durable write costs to the same parsing.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from form_handler.consent.submissions import ValidationFailed, parse_submission
from form_handler.ledger.types import ConsentDraft
from form_handler.web.bodies import Refused, read_fields


async def parsed(request: Request) -> ConsentDraft | Response:
    """The submission as the product reads and validates it, or the refusal to send instead."""
    try:
        is_json, fields = await read_fields(request)
    except Refused as r:
        return JSONResponse({"errors": r.errors}, status_code=r.status)
    draft = parse_submission(fields, is_json=is_json)
    if isinstance(draft, ValidationFailed):
        return JSONResponse({"errors": draft.errors}, status_code=draft.status)
    return draft


async def feedback(request: Request) -> Response:
    """Parse and validate like the product, then redirect; nothing is written anywhere."""
    draft = await parsed(request)
    return draft if isinstance(draft, Response) else RedirectResponse("/feedback/thanks/", status_code=303)


app = Starlette(routes=[Route("/api/feedback", feedback, methods=["POST"])])
