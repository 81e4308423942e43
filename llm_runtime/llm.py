"""The Python API: `LLM(model).generate / stream / chat`."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from llm_runtime.kv_cache import KVCache

from .chat_template import ChatTemplate
from .completion import Chunk, Completion
from .engine import Engine, RequestHandle
from .generation import stream_tokens
from .model_folder import ModelFolder
from .model_resolver import resolve_model
from .output_stream import OutputStream
from .prompt_check import check_prompt
from .providers import CAPABILITIES, resolve
from .request_sampler import RequestSampler
from .runner import ModelRunner
from .sampling_params import ParameterError, SamplingParams
from .session import SessionConfig, make_session
from .speculation import SpeculationConfig

log = logging.getLogger(__name__)


class LLM:
    """A model ready to generate. `model`: a built folder, "default", a Hugging Face folder or a .gguf file
    (the last two are built into the cache on first use)."""

    def __init__(self, model: str | Path = "default", provider: str = "cpu", threads: int = 0,
                 optimization: str = "all", optimized_model_path: str | None = None,
                 provider_options: dict | None = None, max_cache_bytes: int | None = None,
                 max_running: int = 16, max_waiting: int = 1024, token_budget: int = 256,
                 speculation: str | SpeculationConfig | None = None, num_speculative_tokens: int = 4):
        # speculation="ngram": prompt-lookup drafts verified in the engine's step (validated before loading)
        if isinstance(speculation, str):
            speculation = SpeculationConfig(speculation, num_speculative_tokens)
        self.speculation = speculation
        self.provider = resolve(provider)
        cap = CAPABILITIES[self.provider]
        self.folder = ModelFolder.open(resolve_model(model, cap.build_provider))
        self.session_config = SessionConfig(threads, optimization, optimized_model_path, provider_options)
        session = make_session(self.folder.model_file, self.provider, self.session_config)
        self.runner = ModelRunner(self.folder, session)
        c = self.folder.contract
        self.cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=1, capacity=256,
                             device=cap.cache_device, max_bytes=max_cache_bytes, max_capacity=self.folder.context_length,
                             windows=dict(c.window_cache))
        self._held: list[int] = []  # prompt tokens whose keys and values self.cache's slot 0 holds
        self.tokenizer = self.folder.tokenizer
        self.template = ChatTemplate.for_model(self.folder)
        self._lock = threading.Lock()  # one graph call at a time: the single path and the engine share the session
        self._engine_args = dict(max_running=max_running, max_waiting=max_waiting, token_budget=token_budget,
                                 max_cache_bytes=max_cache_bytes, cache_device=cap.cache_device)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The continuous-batching engine over this model (started on first use)."""
        if self._engine is None:
            a, c = self._engine_args, self.folder.contract
            cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=a["max_running"],
                            capacity=256, device=a["cache_device"], max_bytes=a["max_cache_bytes"],
                            max_capacity=self.folder.context_length, windows=dict(c.window_cache))
            runner = ModelRunner(self.folder, self.runner.session)
            self._engine = Engine(runner, cache, a["max_running"], a["max_waiting"], a["token_budget"], lock=self._lock,
                                  speculation=self.speculation)
        return self._engine

    def reset_prefix_cache(self) -> None:
        """Forget which tokens the caches hold, so the next prompts are computed whole (cold-prefill benchmarks)."""
        with self._lock:
            self._held.clear()
            if self._engine is not None:
                self._engine.scheduler.retained.clear()

    def submit(self, prompt: str | list[int], params: SamplingParams | None = None, loop=None) -> RequestHandle:
        """Queue a request on the engine; the handle streams chunks and can be cancelled."""
        ids = self.encode(prompt) if isinstance(prompt, str) else _token_ids(prompt)
        return self.engine.submit(ids, params or SamplingParams(), loop)

    # text -> ids; a chat-rendered prompt already holds its special tokens
    def encode(self, text: str, special: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise ParameterError("prompt", f"prompt must be a string, got {type(text).__name__}")
        # encode_batch lets go of the GIL (encode does not): a long prompt tokenized in a worker thread leaves
        # the server's event loop running
        return self.tokenizer.encode_batch([text], add_special_tokens=special)[0].ids

    def render_chat(self, messages: list[dict]) -> str:
        return self.template.render(messages, add_generation_prompt=True)

    def stream_ids(self, prompt_ids: list[int], params: SamplingParams | None = None) -> Iterator[Chunk]:
        """Stream the completion of already-tokenized `prompt_ids`. With speculation on, through the engine, whose
        step verifies the drafts."""
        params = check_prompt(prompt_ids, params or SamplingParams(), self.folder.context_length,
                              self.folder.vocab_size)
        if self.speculation is not None:
            yield from self.submit(prompt_ids, params)
            return
        out = OutputStream(self.tokenizer, prompt_ids, params, self.folder.eos_token_ids)
        sampler = RequestSampler(params, prompt_ids, self.folder.eos_token_ids, out.token_text)
        with self._lock:
            yield from stream_tokens(self.runner, self.cache, prompt_ids, sampler, out, self._held)

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[Chunk]:
        """Text deltas and token ids as they are generated."""
        return self.stream_ids(self.encode(prompt), params)

    def generate(self, prompts: str | list[str], params: SamplingParams | None = None) -> Completion | list[Completion]:
        """One Completion for a string, a list of Completions for a list of strings."""
        want = bool(params and params.logprobs)
        if isinstance(prompts, str):
            return Completion.fold(self.stream(prompts, params), want)
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise ParameterError("prompt", "prompts must be a string or a list of strings")
        handles = self.engine.submit_all([self.encode(p) for p in prompts], params or SamplingParams())
        return [h.result() for h in handles]  # all in flight at once, batched by the engine

    def chat_stream(self, messages: list[dict], params: SamplingParams | None = None) -> Iterator[Chunk]:
        return self.stream_ids(self.encode(self.render_chat(messages), special=False), params)

    def chat(self, messages: list[dict], params: SamplingParams | None = None) -> Completion:
        """The assistant's reply to a conversation, rendered with the model's chat template."""
        return Completion.fold(self.chat_stream(messages, params), bool(params and params.logprobs))


def _token_ids(prompt) -> list[int]:
    if not isinstance(prompt, (list, tuple)):
        raise ParameterError("prompt", f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
    return list(prompt)
