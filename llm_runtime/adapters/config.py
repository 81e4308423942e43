"""How a model serves LoRA adapters: which linears its build carries LoRA inputs on, and the slot table's bounds."""
from __future__ import annotations

from dataclasses import dataclass

from llm_runtime.model_builder.contract import LORA_TARGETS


@dataclass(frozen=True)
class LoraConfig:
    """`targets`: the linears of a LoRA build (a model named by source is built with them; a built folder keeps
    its own). `max_slots`: adapters resident at once; `max_bytes`: the slot table's cap (None: none). Loaded
    adapters beyond either wait, evicted least recently used while no request holds them."""

    targets: tuple[str, ...] = LORA_TARGETS
    max_slots: int = 8
    max_bytes: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"LoRA targets must be among {', '.join(LORA_TARGETS)}, got {list(self.targets)}")
        if self.max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {self.max_slots}")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {self.max_bytes}")
