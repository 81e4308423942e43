"""The models one server serves, by the name clients send: each has its own LLM and engine.

Without a limit every model is loaded at start (requests get 503 while it loads). With `max_loaded`, a model
loads on its first request; when `max_loaded` models are loaded, the least recently used idle one (no request
being prepared, nothing running or waiting in its engine) is unloaded first, and a request waits while every
loaded model is busy (503 after `wait_s`).

A request's `model` may also name a LoRA adapter one model serves: it runs on that model with
`SamplingParams.adapter` set to the name, which comes in with the model's sampling defaults (`sampling_defaults`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio

from llm_runtime.openai.generation_config import GenerationConfig

from .errors import APIError

log = logging.getLogger(__name__)


@dataclass
class Model:
    name: str
    load: Callable[[], object] | None  # makes the LLM (in a worker thread); None: given ready, never unloaded
    llm: object | None = None
    preparing: int = 0  # requests between choosing this model and queueing on its engine
    last_used: float = field(default_factory=time.monotonic)
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # serve --generation-config
    recommended: dict | None = None  # the folder's recommended sampling; None: read from the LLM once loaded
    adapters: dict[str, str] = field(default_factory=dict)  # LoRA adapter name -> its file or folder (/v1/models' root)

    def sampling_defaults(self) -> dict:
        """What a request that leaves a sampling field out gets (then SamplingParams' own default)."""
        if self.recommended is None and self.llm is not None:
            self.recommended = dict(getattr(getattr(self.llm, "folder", None), "sampling", {}))
        return self.generation.defaults(self.recommended or {})

    def idle(self) -> bool:
        if self.preparing:
            return False
        stats = self.llm.engine.stats()
        return stats.running == 0 and stats.waiting == 0


def adapter_roots(config) -> dict[str, str]:
    """An LLMConfig's adapters to load at start, name -> the file or folder (a LoraAdapter's `source`)."""
    adapters = getattr(config, "adapters", ())  # None: an LLM still loading, or a stand-in without a config
    return {name: str(getattr(source, "source", source)) for name, source in adapters}


def not_found(name: str) -> APIError:
    return APIError(404, f"the model {name!r} does not exist", param="model", code="model_not_found")


def loading() -> APIError:
    return APIError(503, "the model is loading", code="model_loading", headers={"Retry-After": "5"})


def unhealthy() -> APIError:
    return APIError(503, "the engine is unhealthy", code="engine_unhealthy")


class ModelRegistry:
    """Served name -> Model, in the order given (the first is listed first)."""

    def __init__(self, models: list[Model], max_loaded: int | None = None, wait_s: float = 60.0):
        if max_loaded is not None and max_loaded < 1:
            raise ValueError(f"--max-loaded must be >= 1, got {max_loaded}")
        self.models = {m.name: m for m in models}
        for model in models:
            for adapter in model.adapters:
                self.check_adapter_name(adapter)
        self.max_loaded, self.wait_s = max_loaded, wait_s
        self._lock: asyncio.Lock | None = None  # made on the serving loop, at first use

    @classmethod
    def single(cls, name: str, llm) -> "ModelRegistry":
        """One model, given ready with its adapters (or None while the caller loads it: then set
        `registry.models[name].llm`)."""
        return cls([Model(name, None, llm, adapters=adapter_roots(getattr(llm, "config", None)))])

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def check(self, name: str) -> Model:
        """The model of that name (the model an adapter of that name belongs to), or a 404 in OpenAI's shape."""
        if (model := self.models.get(name) or self.parent(name)) is None:
            raise not_found(name)
        return model

    def parent(self, adapter) -> Model | None:
        """The model that serves the adapter named `adapter`, if one does."""
        return next((m for m in self.models.values() if adapter in m.adapters), None)

    def taken(self, name: str) -> bool:
        """Whether a served model or adapter has the name `name`."""
        return name in self.models or self.parent(name) is not None

    def check_adapter_name(self, name: str) -> None:
        """ValueError for an adapter name that a served model or another model's adapter has."""
        if name in self.models:
            raise ValueError(f"the adapter name {name!r} is a served model's name: give the adapter another")
        if sum(name in m.adapters for m in self.models.values()) > 1:
            raise ValueError(f"two models serve an adapter named {name!r}")

    def sampling_defaults(self, name) -> dict:
        """The named model's sampling defaults ({} for a name not served: the request is refused later); an
        adapter's name gives its model's, with `adapter` set to it."""
        if not isinstance(name, str):
            return {}
        if (model := self.models.get(name)) is not None:
            return model.sampling_defaults()
        model = self.parent(name)
        return {**model.sampling_defaults(), "adapter": name} if model is not None else {}

    def loaded(self) -> list[Model]:
        return [m for m in self.models.values() if m.llm is not None]

    def check_health(self) -> None:
        """503 while a model that loads at start is loading, or when a loaded engine has failed."""
        if any(m.llm is None and m.load is None for m in self.models.values()):
            raise loading()
        if not all(m.llm.engine.stats().healthy for m in self.loaded()):
            raise unhealthy()

    def shutdown(self) -> None:
        """Stop every loaded engine (their threads joined); at the server's exit."""
        for model in self.loaded():
            model.llm.engine.shutdown()

    @contextlib.asynccontextmanager
    async def use(self, name: str) -> AsyncIterator[object]:
        """The model's LLM, loaded (and another unloaded) if need be; while the block runs, the model counts as
        busy, and after it, its engine's running and waiting requests keep it busy."""
        model = self.check(name)
        model.preparing += 1
        try:
            llm = await self._ready(model)
            if not llm.engine.stats().healthy:
                raise unhealthy()
            yield llm
        finally:
            model.preparing -= 1
            model.last_used = time.monotonic()

    async def _ready(self, model: Model):
        if model.llm is not None:
            return model.llm
        if model.load is None:  # given by the caller, who is still loading it
            raise loading()
        self._lock = self._lock or asyncio.Lock()
        deadline = time.monotonic() + self.wait_s
        while True:
            async with self._lock:  # one load at a time: the decision and the memory it takes
                if model.llm is not None:
                    return model.llm
                if await self._make_room():
                    log.warning("loading model %s", model.name)
                    try:
                        model.llm = await anyio.to_thread.run_sync(model.load)
                    except Exception as e:  # told to this request; the next one tries again
                        log.error("loading model %s failed", model.name, exc_info=e)
                        raise APIError(500, f"the model {model.name!r} failed to load: {e}", "server_error",
                                       code="model_load_failed") from None
                    return model.llm
            if time.monotonic() > deadline:
                raise APIError(503, f"every loaded model is busy (at most {self.max_loaded} loaded)",
                               code="model_busy", headers={"Retry-After": "5"})
            await asyncio.sleep(0.05)

    async def _make_room(self) -> bool:
        """Room for one more loaded model: there is, or the least recently used idle one is unloaded."""
        loaded = self.loaded()
        if self.max_loaded is None or len(loaded) < self.max_loaded:
            return True
        idle = [m for m in loaded if m.load is not None and m.idle()]
        if not idle:
            return False
        victim = min(idle, key=lambda m: m.last_used)
        log.warning("unloading model %s (least recently used)", victim.name)
        llm, victim.llm = victim.llm, None
        await anyio.to_thread.run_sync(llm.engine.shutdown)  # joins the engine's thread: off the loop
        return True
