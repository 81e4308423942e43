"""The OpenAI-compatible HTTP API on the continuous-batching engine."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_runtime.engine import QueueFullError
from llm_runtime.sampling_params import ParameterError

from .errors import APIError, bad_request
from .metrics import Metrics
from .schemas import ERROR_RESPONSES, ChatRequest, CompletionRequest, first_error
from .streaming import fold, openai_chunks

log = logging.getLogger(__name__)
MAX_BODY = 4 << 20


def create_app(llm, served_model_name: str, api_keys: list[str] = (), cors_origins: list[str] = ()) -> FastAPI:
    app = FastAPI(title="llm-runtime", version="0.1.0")
    metrics = Metrics()
    keys = [k.encode() for k in api_keys]
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"], allow_headers=["*"])

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Body size and API key, before anything reads the body."""
        if request.url.path.startswith("/v1/"):
            size = request.headers.get("content-length")
            if size and (not size.isdigit() or int(size) > MAX_BODY):
                return APIError(413, f"request body over {MAX_BODY} bytes", code="request_too_large").response()
            if keys:
                auth = request.headers.get("authorization", "")
                token = auth[7:].encode() if auth.lower().startswith("bearer ") else b""
                if not any(hmac.compare_digest(token, k) for k in keys):
                    return APIError(401, "invalid or missing API key", "invalid_request_error",
                                    code="invalid_api_key").response()
        response = await call_next(request)
        if request.url.path.startswith("/v1/"):
            metrics.request(request.url.path, response.status_code)
        return response

    @app.exception_handler(APIError)
    async def api_error(_request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        message, param = first_error(exc.errors())
        return bad_request(message, param).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        return APIError(exc.status_code, str(exc.detail), "invalid_request_error").response()

    @app.exception_handler(Exception)
    async def internal_error(_request, exc: Exception):
        log.exception("internal error")
        return APIError(500, "internal error", "server_error").response()

    def check_model(name: str) -> None:
        if name != served_model_name:
            raise APIError(404, f"the model {name!r} does not exist", "invalid_request_error", "model", "model_not_found")

    def prompt_ids(req) -> list[int]:
        if isinstance(req, ChatRequest):
            try:
                text = llm.render_chat([m.plain() for m in req.messages])
            except ValueError as e:
                raise bad_request(str(e), "messages") from None
            return llm.encode(text, special=False)
        return llm.encode(req.prompt)

    async def generate(req, chat: bool):
        check_model(req.model)
        ids = await anyio.to_thread.run_sync(prompt_ids, req)  # tokenizing and templating off the event loop
        context = llm.folder.context_length
        if not ids:
            raise bad_request("the prompt is empty", "messages" if chat else "prompt")
        limit = max(context - len(ids), 1)
        asked = (req.max_completion_tokens or req.max_tokens) if chat else req.max_tokens
        if len(ids) >= context or (asked and len(ids) + asked > context):
            raise bad_request(f"this model's context is {context} tokens; the prompt is {len(ids)} tokens"
                              f"{f' and max_tokens {asked}' if asked else ''}",
                              "messages" if chat else "prompt", "context_length_exceeded")
        loop = asyncio.get_running_loop()
        handles = []
        try:
            for i in range(req.n):
                handles.append(llm.submit(ids, req.params(i, limit), loop=loop))
        except QueueFullError as e:
            for h in handles:
                h.cancel()
            raise APIError(429, str(e), "rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"})
        except ParameterError as e:
            for h in handles:
                h.cancel()
            raise bad_request(str(e), e.param) from None
        include_usage = bool(req.stream_options and req.stream_options.include_usage) or not req.stream
        chunks = openai_chunks(handles, chat, served_model_name, include_usage, metrics, len(ids))
        if not req.stream:
            try:
                return JSONResponse(await fold(chunks, chat, req.n))
            finally:
                for h in handles:
                    h.cancel()
        return EventSourceResponse(sse(chunks, handles), ping=15)

    async def sse(chunks, handles):
        try:
            async for c in chunks:
                yield json.dumps(c)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a failure after streaming began: an error event, then [DONE]
            log.exception("stream failed")
            yield json.dumps(APIError(500, f"generation failed: {e}", "server_error").body())
        finally:
            for h in handles:  # a client gone mid-stream frees its slots at once
                h.cancel()
        yield "[DONE]"

    @app.post("/v1/chat/completions", responses=ERROR_RESPONSES)
    async def chat_completions(req: ChatRequest):
        return await generate(req, chat=True)

    @app.post("/v1/completions", responses=ERROR_RESPONSES)
    async def completions(req: CompletionRequest):
        return await generate(req, chat=False)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served_model_name, "object": "model", "created": int(time.time()),
                                            "owned_by": "llm-runtime"}]}

    @app.get("/health", responses={503: {"description": "loading, or the engine has failed"}})
    async def health():
        ok = llm.engine.stats().healthy
        return JSONResponse({"status": "ok" if ok else "unhealthy"}, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(metrics.render(llm.engine.stats()), media_type="text/plain; version=0.0.4")

    def openapi() -> dict:
        """FastAPI's schema, less the 422 it documents by default: validation errors are 400 here."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path in spec["paths"].values():
                for op in path.values():
                    op.get("responses", {}).pop("422", None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi
    return app
