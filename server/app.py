"""The OpenAI-compatible HTTP API on the continuous-batching engine."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

import anyio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sse_starlette.sse import EventSourceResponse

from llm_runtime.engine import QueueFullError
from llm_runtime.sampling_params import ParameterError

from . import errors
from .errors import ERROR_RESPONSES, APIError, bad_request
from .metrics import Metrics
from .schemas import ChatCompletion, ChatRequest, CompletionRequest, ModelCard, ModelList, TextCompletion, ok
from .streaming import fold, openai_chunks

log = logging.getLogger(__name__)
MAX_BODY = 4 << 20
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models")


class Gate:
    """ASGI middleware for /v1: the API key, then the body size (read whole, at most MAX_BODY bytes,
    then replayed), before anything parses the body. Counts requests by route and status."""

    def __init__(self, app, keys: list[bytes], metrics: Metrics):
        self.app, self.keys, self.metrics = app, keys, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        route = next((r for r in ROUTES if scope["path"].startswith(r)), "other")
        status = 0

        async def counted_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if error := self._refusal(scope):
                return await error.response()(scope, receive, counted_send)
            parts, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                parts.append(message.get("body", b""))
                size, more = size + len(parts[-1]), message.get("more_body", False)
                if size > MAX_BODY:
                    return await _too_large().response()(scope, receive, counted_send)
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": b"".join(parts), "more_body": False}
                return await receive()

            # the body is JSON whatever the content type says (curl -d sends a form type)
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
            await self.app(scope, replay, counted_send)
        finally:
            self.metrics.request(route, status)

    def _refusal(self, scope) -> APIError | None:
        headers = dict(scope["headers"])
        if self.keys:
            auth = headers.get(b"authorization", b"")
            token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            if not any([hmac.compare_digest(token, k) for k in self.keys]):  # a list: every key is compared
                return APIError(401, "invalid or missing API key", code="invalid_api_key")
        size = headers.get(b"content-length", b"0")
        if not size.isdigit() or int(size) > MAX_BODY:
            return _too_large()
        return None


def _too_large() -> APIError:
    return APIError(413, f"the request body is over {MAX_BODY} bytes", code="request_too_large")


def create_app(llm, served_model_name: str, api_keys: list[str] = (), cors_origins: list[str] = ()) -> FastAPI:
    """The app over `llm` (an LLM). `llm` may be None while the model loads: set `app.state.llm` when
    ready; until then /health and /v1 answer 503."""
    app = FastAPI(title="llm-runtime", version="0.1.0")
    app.state.llm = llm
    metrics = Metrics()
    errors.install(app)
    app.add_middleware(Gate, keys=[k.encode() for k in api_keys], metrics=metrics)
    if cors_origins:  # outermost: preflights need no key
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"], allow_headers=["*"])

    def ready():
        llm = app.state.llm
        if llm is None:
            raise APIError(503, "the model is loading", code="model_loading", headers={"Retry-After": "5"})
        if not llm.engine.stats().healthy:
            raise APIError(503, "the engine is unhealthy", code="engine_unhealthy")
        return llm

    def check_model(name: str) -> None:
        if name != served_model_name:
            raise APIError(404, f"the model {name!r} does not exist", param="model", code="model_not_found")

    def submit(llm, req, chat: bool, loop) -> tuple[list, int]:
        """Template, tokenize, check and queue the n choices: in a worker thread, off the event loop."""
        param = "messages" if chat else "prompt"
        try:
            text = llm.render_chat([m.plain() for m in req.messages]) if chat else req.prompt
            if isinstance(text, str):
                text.encode()  # lone surrogates (valid JSON escapes, not text) raise UnicodeEncodeError
                ids = llm.encode(text, special=not chat)  # a rendered chat already holds its special tokens
            else:
                ids = list(text)
        except UnicodeError:
            raise bad_request(f"{param} is not valid unicode text", param) from None
        except ValueError as e:  # the template refused the conversation
            raise bad_request(str(e), param) from None
        context, asked = llm.folder.context_length, req.asked_tokens
        if len(ids) >= context or (asked and len(ids) + asked > context):
            raise bad_request(f"this model's context is {context} tokens; the prompt is {len(ids)} tokens"
                              f"{f' and max_tokens is {asked}' if asked else ''}", param, "context_length_exceeded")
        handles = []
        try:
            for i in range(req.n):
                handles.append(llm.submit(ids, req.params(i, context - len(ids)), loop=loop))
        except BaseException as e:
            cancel(handles)
            if isinstance(e, QueueFullError):
                raise APIError(429, str(e), code="rate_limit_exceeded", headers={"Retry-After": "1"}) from None
            if isinstance(e, ParameterError):
                raise bad_request(str(e), e.param) from None
            raise
        return handles, len(ids)

    async def generate(request: Request, req, chat: bool):
        start = time.perf_counter()
        check_model(req.model)
        llm = ready()
        handles, n_prompt = await anyio.to_thread.run_sync(submit, llm, req, chat, asyncio.get_running_loop())
        want_logprobs = bool(req.logprobs) if chat else req.logprobs is not None
        chunks = openai_chunks(handles, chat, served_model_name, req.include_usage or not req.stream, metrics,
                               n_prompt, start)
        if req.stream:
            return EventSourceResponse(sse(chunks, handles), ping=15, sep="\n")
        folding = asyncio.ensure_future(fold(chunks, chat, req.n, want_logprobs))
        gone = asyncio.ensure_future(disconnected(request))
        await asyncio.wait({folding, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not folding.done():  # the client left: free its slots now
            cancel(handles)
            folding.cancel()
            return Response(status_code=499)
        if e := folding.exception():
            log.error("generation failed", exc_info=e)
            raise APIError(500, f"generation failed: {e}", "server_error")
        return JSONResponse(folding.result())

    async def disconnected(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def sse(chunks, handles):
        try:
            async for c in chunks:
                yield json.dumps(c, separators=(",", ":"))
        except Exception as e:  # a failure after streaming began: an error event, then [DONE]
            log.error("generation failed", exc_info=e)
            yield json.dumps(APIError(500, f"generation failed: {e}", "server_error").body())
        finally:  # a client gone mid-stream cancels its requests in the engine at once
            cancel(handles)
        yield "[DONE]"

    def cancel(handles) -> None:
        for h in handles:
            h.cancel()

    @app.post("/v1/chat/completions", response_model=None, responses={**ok(ChatCompletion, True), **ERROR_RESPONSES})
    async def chat_completions(req: ChatRequest, request: Request):
        return await generate(request, req, chat=True)

    @app.post("/v1/completions", response_model=None, responses={**ok(TextCompletion, True), **ERROR_RESPONSES})
    async def completions(req: CompletionRequest, request: Request):
        return await generate(request, req, chat=False)

    def model_card() -> dict:
        return {"id": served_model_name, "object": "model", "created": int(start_time), "owned_by": "llm-runtime"}

    start_time = time.time()

    @app.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model}", response_model=ModelCard, responses=ERROR_RESPONSES)
    async def model(model: str):
        check_model(model)
        return model_card()

    @app.get("/health", responses={503: {"model": errors.ErrorBody, "description": "loading or unhealthy"}})
    async def health():
        ready()
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        llm = app.state.llm
        return PlainTextResponse(metrics.render(llm.engine.stats() if llm else None),
                                 media_type="text/plain; version=0.0.4")

    def openapi() -> dict:
        """FastAPI's document, less the 422 it adds by default: a validation error is a 400 here."""
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path in spec["paths"].values():
                for op in path.values():
                    op.get("responses", {}).pop("422", None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi
    return app
