"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's endpoints), served only with
`serve --allow-adapter-updates` and behind the API key like every /v1 route.

A load reads the adapter and writes its slot in a worker thread, off the event loop, while the engine keeps
stepping: running streams go on, and requests may name the adapter once the reply has come. An adapter that
cannot be read or does not fit the model is a 400 and nothing is loaded. An unload lets the requests that use the
adapter finish under it; new requests naming it get a 404."""
from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from llm_runtime.errors import ParameterError

from .errors import ERROR_RESPONSES, APIError, bad_request
from .models import Model, ModelRegistry
from .schemas import LoadLoraAdapter, UnloadLoraAdapter

log = logging.getLogger(__name__)


def router(models: ModelRegistry) -> APIRouter:
    """The two routes over the served `models`; the adapters go to the model that serves adapters."""
    routes = APIRouter()

    @routes.post("/v1/load_lora_adapter", response_class=PlainTextResponse, responses=ERROR_RESPONSES)
    async def load(body: LoadLoraAdapter):
        name = body.lora_name
        model = _serving(models)
        if models.taken(name):
            raise bad_request(f"the name {name!r} is taken by a served model or adapter", "lora_name")
        async with models.use(model.name) as llm:
            try:
                await anyio.to_thread.run_sync(llm.load_adapter, name, body.lora_path)
            except ValueError as e:  # unreadable, does not fit, or the name taken meanwhile: nothing loaded
                raise bad_request(str(e), "lora_path", "invalid_adapter") from None
        model.adapters[name] = body.lora_path
        log.info("LoRA adapter %r loaded from %s", name, body.lora_path)
        return f"Success: LoRA adapter '{name}' added successfully."

    @routes.post("/v1/unload_lora_adapter", response_class=PlainTextResponse, responses=ERROR_RESPONSES)
    async def unload(body: UnloadLoraAdapter):
        name = body.lora_name
        model = models.parent(name)
        if model is None:
            raise APIError(404, f"no LoRA adapter named {name!r} is loaded", param="lora_name",
                           code="adapter_not_found")
        del model.adapters[name]  # new requests are refused from here on
        try:
            model.llm.unload_adapter(name)
        except ParameterError:  # unloaded meanwhile
            raise APIError(404, f"no LoRA adapter named {name!r} is loaded", param="lora_name",
                           code="adapter_not_found") from None
        log.info("LoRA adapter %r unloaded", name)
        return f"Success: LoRA adapter '{name}' removed successfully."

    return routes


def _serving(models: ModelRegistry) -> Model:
    """The loaded model that serves adapters (a LoRA build), or a 400."""
    for model in models.loaded():
        if getattr(model.llm, "adapters", None) is not None:
            return model
    raise bad_request("no served model serves LoRA adapters (serve --enable-lora or --lora NAME=PATH)",
                      code="adapters_disabled")
