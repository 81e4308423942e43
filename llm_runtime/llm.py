"""The Python API: `LLM(model).generate / stream / chat`."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from llm_runtime.adapters import LoraAdapter, LoraConfig
from llm_runtime.adapters.registry import AdapterRegistry, UnknownAdapterError
from llm_runtime.chat.template import ChatTemplate
from llm_runtime.completion import Chunk, Completion
from llm_runtime.engine import Engine, EngineConfig, RequestHandle
from llm_runtime.errors import ParameterError
from llm_runtime.graph.providers import CAPABILITIES, resolve
from llm_runtime.graph.runner import ModelRunner
from llm_runtime.graph.session import make_session
from llm_runtime.kv_cache import KVCache
from llm_runtime.llm_config import LLMConfig
from llm_runtime.models.folder import ModelFolder
from llm_runtime.sampling.params import SamplingParams
from llm_runtime.speculation import SpeculationConfig
from llm_runtime.tools.format import detect_format
from llm_runtime.tools.request import ToolRequest

log = logging.getLogger(__name__)


class LLM:
    """A model ready to generate. `model`: a built folder, "default", a Hugging Face folder, a .gguf file or a
    Hub name such as "Qwen/Qwen2.5-0.5B-Instruct" (the last three are built into the cache on first use), or a
    whole LLMConfig (what the doors build from their
    flags); the other arguments become one through `LLMConfig.of`.

    `adapters` ({name: adapter file or LoraAdapter}) or `lora` (a LoraConfig) serve LoRA adapters: a model named by
    its source is built with LoRA inputs (a folder of its own), and `SamplingParams(adapter=name)` picks one per
    request."""

    def __init__(self, model: str | Path | LLMConfig = "default", provider: str | None = None,
                 threads: int | None = None, optimization: str | None = None, optimized_model_path: str | None = None,
                 provider_options: dict | None = None, engine: EngineConfig | None = None,
                 speculation: str | SpeculationConfig | None = None, num_speculative_tokens: int | None = None,
                 adapters: dict[str, str | Path | LoraAdapter] | None = None, lora: LoraConfig | None = None):
        # the settings left None keep LLMConfig's defaults (provider cpu, onnxruntime's threads, EngineConfig());
        # speculation="ngram": prompt-lookup drafts verified in the engine's step (validated before loading)
        settings = (provider, threads, optimization, optimized_model_path, provider_options, engine, speculation,
                    num_speculative_tokens, adapters, lora)
        if isinstance(model, LLMConfig) and any(s is not None for s in settings):
            raise TypeError("LLM(config) takes its settings from the LLMConfig: give no other argument")
        config = model if isinstance(model, LLMConfig) else LLMConfig.of(model, *settings)
        self.config = config
        self.provider = resolve(config.provider)
        cap = CAPABILITIES[self.provider]
        self.folder = ModelFolder.open(config.model_folder())
        session = make_session(self.folder.model_file, self.provider, config.session)
        self.adapters = self._adapter_registry(config.lora)
        lora_session = None
        if self.adapters is not None:  # the LoRA graph beside the plain one; no saved copy of its optimized graph
            lora_session = make_session(self.folder.path / self.folder.manifest["lora"]["model"], self.provider,
                                        replace(config.session, optimized_model_path=None))
        self.runner = ModelRunner(self.folder, session, lora_session, self.adapters)
        c = self.folder.contract
        # one cache for every door: a slot per running sequence, each sized to its prompt plus max_tokens
        self.cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype),
                             slots=1, max_slots=config.engine.max_concurrency, capacity=256, device=cap.cache_device,
                             max_bytes=config.engine.max_cache_bytes, max_capacity=self.folder.context_length,
                             windows=dict(c.window_cache))
        self.engine = Engine(self.runner, self.cache, config.engine, config.speculation)
        self.tokenizer = self.folder.tokenizer
        self.template = ChatTemplate.for_model(self.folder)
        for name, source in config.adapters:
            self.load_adapter(name, source)

    def _adapter_registry(self, lora: LoraConfig | None) -> AdapterRegistry | None:
        if lora is None:
            return None
        sites = self.folder.contract.lora_sites
        if not sites:
            raise ValueError(f"{self.folder.path} was built without LoRA inputs: build it with LoRA targets "
                             "(`llm-runtime build --lora-targets ...`), or name its source so that it is built so")
        return AdapterRegistry(sites, np.dtype(self.folder.contract.kv_dtype), lora.max_slots, lora.max_bytes)

    # ---- LoRA adapters ----------------------------------------------------------------------------------------

    def load_adapter(self, name: str, adapter: str | Path | LoraAdapter, replace_loaded: bool = False) -> None:
        """Load a LoRA adapter under `name` (a file or folder read by `llm_runtime.adapters.read_adapter`, or a
        LoraAdapter) while the model runs: requests may name it as soon as this returns. Raises
        AdapterMismatchError (a ValueError) when it does not fit this build, ValueError when `name` is taken
        (unless `replace_loaded`: requests running under the old one finish under it)."""
        if self.adapters is None:
            raise ValueError("this LLM serves no adapters: create it with adapters={...} or lora=LoraConfig()")
        if not isinstance(adapter, LoraAdapter):
            from llm_runtime.adapters import read_adapter  # the file formats' readers
            adapter = read_adapter(adapter, name, self._base_config())
        self.adapters.load(replace(adapter, name=name) if adapter.name != name else adapter, replace_loaded)

    def _base_config(self):
        """The base's ModelConfig from the folder's config.json: reading a PEFT adapter of fused modules (Phi-3)
        or a llama.cpp GGUF LoRA of a llama-type model needs its sizes. None for a folder without a valid one."""
        from llm_runtime.model_builder.config import folder_config
        from llm_runtime.model_builder.source import SourceError

        try:
            return folder_config(self.folder.path)
        except SourceError:
            return None

    def unload_adapter(self, name: str) -> None:
        """Forget adapter `name`: new requests cannot name it; the running ones that use it finish under it."""
        try:
            if self.adapters is None:
                raise UnknownAdapterError(name)
            self.adapters.unload(name)
        except UnknownAdapterError:
            raise ParameterError("adapter", f"no adapter named {name!r} is loaded") from None

    def adapter_names(self) -> list[str]:
        """The names of the loaded adapters."""
        return self.adapters.names() if self.adapters is not None else []

    def reset_prefix_cache(self) -> None:
        """Forget which prompt tokens the cache holds, so the next prompts are computed whole (cold-prefill
        benchmarks)."""
        self.engine.reset_prefix_cache()

    def submit(self, prompt: str | list[int], params: SamplingParams | None = None, loop=None,
               key: str = "") -> RequestHandle:
        """Queue a request on the engine; the handle streams chunks and can be cancelled. `key`: an id of the
        caller (the server's hash of its API key), for the suffix cache's "key" mode."""
        ids = self.encode(prompt) if isinstance(prompt, str) else _token_ids(prompt)
        return self.engine.submit(ids, params or SamplingParams(), loop, key)

    # text -> ids; a chat-rendered prompt already holds its special tokens
    def encode(self, text: str, special: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise ParameterError("prompt", f"prompt must be a string, got {type(text).__name__}")
        # encode_batch lets go of the GIL (encode does not): a long prompt tokenized in a worker thread leaves
        # the server's event loop running
        return self.tokenizer.encode_batch([text], add_special_tokens=special)[0].ids

    def render_chat(self, messages: list[dict]) -> str:
        """The prompt text for `messages`. A history with tool calls and their results, but no tools offered, is
        rendered as it is with tools: the template's own call turns, or the generic format where it has none."""
        if any(isinstance(m, dict) and (m.get("tool_calls") or m.get("function_call")) for m in messages):
            return ToolRequest((), "auto", True, detect_format(self.template.source)).prompt(self.template, messages)
        return self.template.render(messages, add_generation_prompt=True)

    def stream_ids(self, prompt_ids: list[int], params: SamplingParams | None = None) -> Iterator[Chunk]:
        """Stream the completion of already-tokenized `prompt_ids`, stepping the engine on this thread while
        nothing else runs."""
        yield from self.engine.submit_all([_token_ids(prompt_ids)], params or SamplingParams(), inline=True)[0]

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
        handles = self.engine.submit_all([self.encode(p) for p in prompts], params or SamplingParams(), inline=True)
        try:
            return [h.result() for h in handles]  # all in flight at once, batched by the engine
        finally:
            for h in handles:  # an interrupted caller leaves nothing running
                h.cancel()

    def chat_stream(self, messages: list[dict], params: SamplingParams | None = None) -> Iterator[Chunk]:
        return self.stream_ids(self.encode(self.render_chat(messages), special=False), params)

    def chat(self, messages: list[dict], params: SamplingParams | None = None, tools: list[dict] | None = None,
             tool_choice: str | dict | None = None, parallel_tool_calls: bool = True) -> Completion:
        """The assistant's reply to a conversation, rendered with the model's chat template. With OpenAI-style
        `tools`, the reply's `tool_calls` are parsed (finish_reason "tool_calls"); `tool_choice` "required" or a
        named function is enforced by a grammar in the model's own call format."""
        want = bool(params and params.logprobs)
        if tools is None and tool_choice is None:
            return Completion.fold(self.chat_stream(messages, params), want)
        request = ToolRequest.of(self.template, tools, tool_choice, parallel_tool_calls)
        prompt = self.encode(request.prompt(self.template, messages), special=False)
        reply = Completion.fold(self.stream_ids(prompt, request.params(params or SamplingParams(), self.tokenizer)),
                                want)
        return request.completion(reply)


def _token_ids(prompt) -> list[int]:
    if not isinstance(prompt, (list, tuple)):
        raise ParameterError("prompt", f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
    return list(prompt)
