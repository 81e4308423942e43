"""LLM generation runtime on ONNX decoder graphs.

The public names load on first use (PEP 562), so that importing a layer below the runtime
(`llm_runtime.model_builder`, `llm_runtime.kv_cache`) does not load the runtime, onnxruntime or the server.
"""
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

# In a checkout, the design's top-level folders (kv_cache/, model_builder/, server/, prompts/) are subpackages of
# this one, as pyproject.toml's package-dir maps them when installed: the folder above is searched for them too.
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "kv_cache" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))

if TYPE_CHECKING:
    from llm_runtime.completion import Chunk, Completion, Usage
    from llm_runtime.llm import LLM
    from llm_runtime.sampling.params import SamplingParams

_PUBLIC = {"LLM": ".llm", "SamplingParams": ".sampling.params", "Completion": ".completion",
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
