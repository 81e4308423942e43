"""The OpenAI-compatible HTTP API on the continuous-batching engine."""
from __future__ import annotations

import contextlib
import hmac
import logging
import time
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse

from llm_runtime.server import adapters, errors, responses, web_ui

from .access_log import AccessLog, StatusRecorder
from .completions import complete, parse
from .drain import Drain, DrainGate
from .errors import ERROR_RESPONSES, APIError
from .metrics import Metrics
from .models import ModelRegistry
from .response_store import ResponseStore, owner_of
from .response_sweeper import ResponseSweeper
from .retention import Retention
from .schemas import ChatCompletion, ChatRequest, CompletionRequest, ModelCard, ModelList, TextCompletion, ok

log = logging.getLogger(__name__)
MAX_BODY = 4 << 20
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/responses", "/v1/load_lora_adapter",
          "/v1/unload_lora_adapter")
STORE_FILE = "responses.sqlite3"


class Gate:
    """ASGI middleware for /v1: the API key, then the body size (read whole, at most MAX_BODY bytes,
    then replayed), before anything parses the body. Counts requests by route and status. /metrics needs
    the key too, unless `public_metrics`. A /v1 request's `request.state.key_id` is its key's owner hash ("" on a
    server without keys): what the suffix cache's "key" mode partitions by, never the key."""

    def __init__(self, app, keys: list[bytes], metrics: Metrics, public_metrics: bool = False):
        self.app, self.keys, self.metrics, self.public_metrics = app, keys, metrics, public_metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/metrics" and not self.public_metrics:
            if self.keys and not self._key_ok(scope):
                return await _bad_key().response()(scope, receive, send)
            return await self.app(scope, receive, send)
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        route = next((r for r in ROUTES if scope["path"].startswith(r)), "other")
        counted_send = StatusRecorder(send)
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
            scope = {**scope, "headers": headers + [(b"content-type", b"application/json")],
                     "state": {**scope.get("state", {}), "key_id": self._key_id(scope)}}
            await self.app(scope, replay, counted_send)
        finally:
            self.metrics.request(route, counted_send.status or 0)

    def _key_ok(self, scope) -> bool:
        auth = dict(scope["headers"]).get(b"authorization", b"")
        token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
        return any([hmac.compare_digest(token, k) for k in self.keys])  # a list: every key is compared

    def _key_id(self, scope) -> str:
        if not self.keys:
            return ""
        auth = dict(scope["headers"]).get(b"authorization", b"")
        return owner_of(auth[7:].strip().decode("latin-1"))

    def _refusal(self, scope) -> APIError | None:
        headers = dict(scope["headers"])
        if self.keys and not self._key_ok(scope):
            return _bad_key()
        size = headers.get(b"content-length", b"0")
        if not size.isdigit() or int(size) > MAX_BODY:
            return _too_large()
        return None


def _bad_key() -> APIError:
    return APIError(401, "invalid or missing API key", code="invalid_api_key")


def _too_large() -> APIError:
    return APIError(413, f"the request body is over {MAX_BODY} bytes", code="request_too_large")


def default_data_dir() -> Path:
    """$LLM_RUNTIME_HOME/server (or ~/.cache/llm-runtime/server)."""
    from llm_runtime.models.default import home

    return home() / "server"


def create_app(models, served_model_name: str | None = None, api_keys: list[str] = (), cors_origins: list[str] = (),
               public_metrics: bool = False, web: bool = True, data_dir: Path | None = None,
               access_log: bool = False, retention: Retention | None = None,
               adapter_updates: bool = False) -> FastAPI:
    """The app over `models`: a ModelRegistry (server/models.py), or one LLM served as `served_model_name` (None
    while it loads: set `app.state.models.models[name].llm` when ready; until then /health and /v1 answer 503).
    With `api_keys`, /v1 and /metrics (unless `public_metrics`) need one of them. `web`: the chat page at `/`.
    `data_dir`: where stored responses live (default $LLM_RUNTIME_HOME/server). `access_log`: one INFO line per
    request (server/access_log.py). `retention`: how long and how much of the stored responses are kept (default
    Retention(); swept while the app runs). `adapter_updates`: POST /v1/load_lora_adapter and
    /v1/unload_lora_adapter (server/adapters.py) load and unload LoRA adapters. `app.state.drain`: set its
    `draining` to refuse new requests (server/drain.py)."""
    store = ResponseStore(Path(data_dir or default_data_dir()) / STORE_FILE, retention or Retention())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        sweeper = ResponseSweeper(store)
        sweeper.start()
        yield
        await anyio.to_thread.run_sync(sweeper.stop)
        await anyio.to_thread.run_sync(store.flush)

    app = FastAPI(title="llm-runtime", version="0.1.0", lifespan=lifespan)
    if not isinstance(models, ModelRegistry):
        models = ModelRegistry.single(served_model_name, models)
    app.state.models = models
    metrics = Metrics()
    errors.install(app)
    app.add_middleware(Gate, keys=[k.encode() for k in api_keys], metrics=metrics, public_metrics=public_metrics)
    if cors_origins:  # outermost: preflights need no key
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"], allow_headers=["*"])
    app.state.drain = Drain()
    app.add_middleware(DrainGate, drain=app.state.drain)  # counts every request, preflights included
    if access_log:  # outermost of all: refusals and preflights are logged too
        app.add_middleware(AccessLog)

    @app.post("/v1/chat/completions", response_model=None, responses={**ok(ChatCompletion, True), **ERROR_RESPONSES})
    async def chat_completions(req: ChatRequest, request: Request):
        models.check(req.model)
        r = parse(req.body(), "chat", models.sampling_defaults(req.model))
        async with models.use(req.model) as llm:
            return await complete(request, r, llm, req.model, metrics)

    @app.post("/v1/completions", response_model=None, responses={**ok(TextCompletion, True), **ERROR_RESPONSES})
    async def completions(req: CompletionRequest, request: Request):
        models.check(req.model)
        r = parse(req.body(), "completions", models.sampling_defaults(req.model))
        async with models.use(req.model) as llm:
            return await complete(request, r, llm, req.model, metrics)

    def model_card(name: str) -> dict:
        """A served model's card, or an adapter's: its `parent` is the model it runs on, its `root` its file."""
        base = models.check(name)
        card = {"id": name, "object": "model", "created": int(start_time), "owned_by": "llm-runtime",
                "generation_config": base.sampling_defaults()}
        return card if base.name == name else {**card, "root": base.adapters[name], "parent": base.name}

    start_time = time.time()

    @app.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
    async def list_models():
        names = [n for m in models.models.values() for n in (m.name, *m.adapters)]
        return {"object": "list", "data": [model_card(name) for name in names]}

    @app.get("/v1/models/{model}", response_model=ModelCard, responses=ERROR_RESPONSES)
    async def model(model: str):
        return model_card(model)

    @app.get("/health", responses={503: {"model": errors.ErrorBody, "description": "loading or unhealthy"}})
    async def health():
        models.check_health()
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        engines = {m.name: m.llm.engine.stats() for m in models.loaded()}
        adapters = {m.name: len(m.llm.adapter_names()) for m in models.loaded()
                    if getattr(m.llm, "adapters", None) is not None}
        return PlainTextResponse(metrics.render(engines, models.names, adapters),
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

    app.include_router(responses.router(models, store, metrics, keyed=bool(api_keys)))
    if adapter_updates:
        app.include_router(adapters.router(models))
    app.openapi = openapi
    if web:
        app.include_router(web_ui.router)
    return app
