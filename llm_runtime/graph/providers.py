"""Execution providers as an enum plus a capability table: names, cache device, preferred dtype."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

import onnxruntime as ort

log = logging.getLogger(__name__)


class Provider(str, Enum):
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"
    DML = "dml"
    OPENVINO = "openvino"
    COREML = "coreml"
    AUTO = "auto"


@dataclass(frozen=True)
class Capability:
    ort_name: str
    cache_device: str  # where the KV cache lives: "cpu", "cuda" or "dml"
    build_provider: str  # the model_builder provider whose graphs suit it


CAPABILITIES: dict[Provider, Capability] = {
    Provider.CPU: Capability("CPUExecutionProvider", "cpu", "cpu"),
    Provider.CUDA: Capability("CUDAExecutionProvider", "cuda", "cuda"),
    Provider.TENSORRT: Capability("TensorrtExecutionProvider", "cuda", "cuda"),
    Provider.DML: Capability("DmlExecutionProvider", "dml", "dml"),
    Provider.OPENVINO: Capability("OpenVINOExecutionProvider", "cpu", "cpu"),
    Provider.COREML: Capability("CoreMLExecutionProvider", "cpu", "cpu"),
}
AUTO_ORDER = (Provider.CUDA, Provider.DML, Provider.CPU)


class ProviderError(ValueError):
    """The requested execution provider is unknown or missing from this onnxruntime build."""


def available() -> list[Provider]:
    names = set(ort.get_available_providers())
    return [p for p, c in CAPABILITIES.items() if c.ort_name in names]


def resolve(name: str | Provider) -> Provider:
    """'auto' picks the best available provider (and logs the fallback); others must be available."""
    try:
        wanted = Provider(name)
    except ValueError:
        raise ProviderError(f"unknown provider {name!r} (known: {', '.join(p.value for p in Provider)})") from None
    have = available()
    if wanted is Provider.AUTO:
        chosen = next(p for p in AUTO_ORDER if p in have)
        if chosen is not AUTO_ORDER[0]:
            log.info("provider auto: %s is not available, using %s", AUTO_ORDER[0].value, chosen.value)
        return chosen
    if wanted not in have:
        raise ProviderError(f"provider {wanted.value!r} is not available in this onnxruntime build "
                            f"(available: {', '.join(p.value for p in have)})")
    return wanted


def session_providers(provider: Provider, options: dict | None = None) -> list:
    """The providers list for InferenceSession: the chosen one (with options) then CPU as fallback."""
    first = (CAPABILITIES[provider].ort_name, options or {})
    return [first] if provider is Provider.CPU else [first, "CPUExecutionProvider"]


def session_device(session) -> str:
    """Where a session's KV cache must live: the cache device of the session's first provider."""
    first = session.get_providers()[0]
    return next((c.cache_device for c in CAPABILITIES.values() if c.ort_name == first), "cpu")
