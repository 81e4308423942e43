"""OpenAI-shaped errors, `{"error": {"message", "type", "param", "code"}}`, for every failure the server reports."""
from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)

_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error", 503: "server_error"}


class APIError(Exception):
    """Raised anywhere while serving a request; becomes the error reply with this status."""

    def __init__(self, status: int, message: str, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers
        self.type = type or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> Response:
        # json.dumps escapes non-ASCII, so user text with lone surrogates cannot break the reply
        return Response(json.dumps(self.body()), self.status, self.headers, media_type="application/json")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


# documented on every /v1 operation (the OpenAPI document drops FastAPI's default 422: validation is a 400 here)
ERROR_RESPONSES = {status: {"model": ErrorBody} for status in (400, 401, 404, 413, 429, 500, 503)}


_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}  # pydantic's names for the branches of a union


def _where(loc) -> list[str]:
    return [str(x) for x in loc if x != "body" and not (isinstance(x, str) and (
        x in _TAGS or "[" in x or "-" in x))]


def first_error(errors: list[dict]) -> tuple[str, str | None]:
    """pydantic's errors -> (message, param): the first field's errors (one per union branch), and that field."""
    if errors[0].get("type") == "json_invalid":
        return f"the request body is not valid JSON ({errors[0].get('ctx', {}).get('error', 'parse error')})", None
    loc = _where(errors[0].get("loc", ()))
    param = loc[0] if loc else None
    parts = []
    for e in errors:
        where = _where(e.get("loc", ()))
        if (where[0] if where else None) == param and len(parts) < 3:
            msg = str(e.get("msg", "invalid value"))
            parts.append(f"{'.'.join(where)}: {msg}" if where else msg)
    return "; ".join(dict.fromkeys(parts)), param


def _validation_error(_: Request, exc: RequestValidationError) -> Response:
    return bad_request(*first_error(exc.errors())).response()


def _http_error(_: Request, exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return APIError(exc.status_code, str(exc.detail), code=code, headers=exc.headers).response()


def _internal_error(_: Request, exc: Exception) -> Response:
    log.error("internal error", exc_info=exc)
    return APIError(500, "internal server error", "server_error", code="internal_error").response()


def install(app: FastAPI) -> None:
    """Every error leaves the server OpenAI-shaped: bad input is a 4xx, only a real bug is a 500."""
    app.add_exception_handler(APIError, lambda _, e: e.response())
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
