"""LLM generation runtime on ONNX decoder graphs."""
from .completion import Chunk, Completion, Usage
from .llm import LLM
from .sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "Completion", "Chunk", "Usage"]
