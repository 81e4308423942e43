"""The built-in chat page at `/`: static files from server/web/, public (the API key guards /v1 only).

The page holds nothing about the server: it asks /v1/models for the model names, with the user's key."""
from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from .errors import APIError

_WEB = files(__package__) / "web"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}
# Model output is rendered as text nodes; the policy is a second wall: no inline script, nothing from elsewhere.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ASSETS = {p.name: p for p in _WEB.iterdir() if p.name.endswith(tuple(_TYPES)) and p.name != "index.html"}

router = APIRouter(include_in_schema=False)


def _file(path) -> Response:
    return Response(path.read_bytes(), media_type=_TYPES[path.name[path.name.rindex("."):]], headers=_HEADERS)


@router.get("/")
async def index() -> Response:
    """The chat page."""
    return _file(_WEB / "index.html")


@router.get("/web/{name}")
async def asset(name: str) -> Response:
    """One of the page's scripts or its stylesheet; nothing else is served from the folder."""
    if name not in ASSETS:
        raise APIError(404, "not found", code="not_found")
    return _file(ASSETS[name])
