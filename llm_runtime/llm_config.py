"""What a door loads: the model and one configuration object per concern (session, engine, speculation), built
once by `LLMConfig.of` (the Python API's keywords, the command line's flags: cli/llm_args.py) and handed whole
to the LLM, to Ray's batch actors and to Ray Serve's replicas (a picklable dataclass)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from llm_runtime.adapters import LoraConfig
from llm_runtime.engine import EngineConfig
from llm_runtime.graph.providers import CAPABILITIES, resolve
from llm_runtime.graph.session import SessionConfig
from llm_runtime.models.resolver import build_options_for, resolve_model
from llm_runtime.speculation import SpeculationConfig


@dataclass(frozen=True)
class LLMConfig:
    """`model`: a built folder, "default", a Hugging Face folder, a .gguf file or a Hub name
    ("Qwen/Qwen2.5-0.5B-Instruct", "org/repo-GGUF:Q4_K_M"). `provider`: the execution
    provider's name ("auto" picks one). `speculation`: None, or how the engine drafts tokens. `lora`: serve LoRA
    adapters (a LoRA build: two graphs on one data file); `adapters`: (name, file or LoraAdapter) loaded at start."""

    model: str = "default"
    provider: str = "cpu"
    session: SessionConfig = field(default_factory=SessionConfig)  # threads, graph optimization
    engine: EngineConfig = field(default_factory=EngineConfig)  # concurrency, queue, token budget
    speculation: SpeculationConfig | None = None
    lora: LoraConfig | None = None
    adapters: tuple[tuple[str, object], ...] = ()  # (name, path or LoraAdapter)

    def __post_init__(self):
        if self.adapters and self.lora is None:  # adapters to load need a LoRA build
            object.__setattr__(self, "lora", LoraConfig())

    @classmethod
    def of(cls, model: str | Path | None = None, provider: str | None = None, threads: int | None = None,
           optimization: str | None = None, optimized_model_path: str | None = None,
           provider_options: dict | None = None, engine: EngineConfig | None = None,
           speculation: str | SpeculationConfig | None = None,
           num_speculative_tokens: int | None = None, adapters: dict | None = None,
           lora: LoraConfig | None = None) -> LLMConfig:
        """The one mapping from loose settings to the config; None leaves a setting at its dataclass default.
        `speculation` "ngram" (prompt lookup) or "suffix" (and the suffix cache) drafts up to
        `num_speculative_tokens` per step (validated here, before loading); a SpeculationConfig sets the rest."""
        if isinstance(speculation, str):
            speculation = SpeculationConfig(speculation, **_given(num_speculative_tokens=num_speculative_tokens))
        session = SessionConfig(**_given(threads=threads, optimization=optimization,
                                         optimized_model_path=optimized_model_path, provider_options=provider_options))
        return cls(**_given(model=None if model is None else str(model), provider=provider), session=session, engine=engine or EngineConfig(),
                   speculation=speculation, lora=lora, adapters=tuple((adapters or {}).items()))

    def build_provider(self) -> str:
        return CAPABILITIES[resolve(self.provider)].build_provider

    def model_folder(self, progress: bool = True):
        """`model` as a built folder (built into the cache on first use), a LoRA build when `lora` is set."""
        provider = self.build_provider()
        opts = build_options_for(provider, self.lora.targets if self.lora is not None else ())
        return resolve_model(self.model, provider, progress, opts)

    def per_replica(self, replicas: int) -> LLMConfig:
        """The config of each of `replicas` Ray actors: threads 0 becomes this machine's cores divided among them
        (an actor reserves that many CPUs)."""
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        if self.session.threads:
            return self
        threads = max(1, (os.cpu_count() or 1) // replicas)
        return replace(self, session=replace(self.session, threads=threads))

    def resolved(self) -> LLMConfig:
        """`model` as a built folder (built into the cache on first use), so that actors load without building;
        the folder must be readable at the same path on every node."""
        return replace(self, model=str(self.model_folder()))


def _given(**settings) -> dict:
    """The settings that are not None."""
    return {k: v for k, v in settings.items() if v is not None}
