"""Continuous batching: sequences in cache slots, a scheduler spending a token budget, the engine loop."""
from .config import EngineConfig
from .engine import Engine, EngineError, EngineStats
from .handle import RequestHandle
from .scheduler import QueueFullError, Scheduler

__all__ = ["Engine", "EngineConfig", "EngineError", "EngineStats", "RequestHandle", "Scheduler", "QueueFullError"]
