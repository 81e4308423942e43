"""onnxruntime session construction: provider, threads, graph optimization level."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from .huge_pages import collapse_weights
from .load_warnings import without_default_input_warnings
from .providers import Provider, session_providers

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionConfig:
    threads: int = 0  # 0: onnxruntime's default (one per physical core)
    optimization: str = "all"
    optimized_model_path: str | None = None  # save the optimized graph here
    provider_options: dict | None = None

    def __post_init__(self):
        if self.optimization not in OPT_LEVELS:
            raise ValueError(f"optimization must be one of {', '.join(OPT_LEVELS)}, got {self.optimization!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


def make_session(model_file: Path, provider: Provider, config: SessionConfig) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = OPT_LEVELS[config.optimization]
    if config.threads:
        opts.intra_op_num_threads = config.threads
    if config.optimized_model_path:
        opts.optimized_model_filepath = config.optimized_model_path
    with without_default_input_warnings():  # the optional inputs' defaults; every other warning is shown
        session = ort.InferenceSession(str(model_file), opts,
                                       providers=session_providers(provider, config.provider_options))
    if provider is Provider.CPU:
        collapse_weights()  # the prepacked weights, now allocated, onto huge pages
    return session
