"""Continuous batching: sequences in cache slots, a scheduler spending a token budget, the engine loop."""
from .engine import Engine, EngineError, EngineStats
from .handle import RequestHandle
from .scheduler import QueueFullError, Scheduler

__all__ = ["Engine", "EngineError", "EngineStats", "RequestHandle", "Scheduler", "QueueFullError"]
