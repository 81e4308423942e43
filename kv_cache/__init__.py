"""KV cache buffers shared by past inputs and present outputs, with slots and memory accounting."""
from .kv_cache import CacheFullError, KVCache, round_up

__all__ = ["KVCache", "CacheFullError", "round_up"]
