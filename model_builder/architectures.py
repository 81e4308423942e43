"""Architectures as rows of a table keyed by `model_type`: what differs between decoder families is data."""
from __future__ import annotations

from dataclasses import dataclass

from .source import SourceError


@dataclass(frozen=True)
class Architecture:
    model_type: str
    genai_type: str  # onnxruntime-genai's `model.type`
    activation: str = "silu"  # gated MLP activation
    rotary_interleaved: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in (
        Architecture("llama", genai_type="llama"),
    )
}


def architecture(model_type: str) -> Architecture:
    """The table row for `model_type`, or one clear error listing what is supported."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise SourceError(f"unsupported model_type {model_type!r} (supported: {supported})") from None
