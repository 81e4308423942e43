"""LLM generation runtime on ONNX decoder graphs.

The public names load on first use (PEP 562), so that importing a layer below the runtime
(`llm_runtime.model_builder`, `llm_runtime.kv_cache`) does not load the runtime, onnxruntime or the server.
"""
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .completion import Chunk, Completion, Usage
    from .llm import LLM
    from .sampling_params import SamplingParams

_PUBLIC = {"LLM": ".llm", "SamplingParams": ".sampling_params", "Completion": ".completion",
           "Chunk": ".completion", "Usage": ".completion"}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
