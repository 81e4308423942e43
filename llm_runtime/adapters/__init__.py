"""LoRA adapters: one in-memory form (`LoraAdapter`), readers and writers of the file formats, and the slot table
a batch's rows select their adapter from."""
from .config import LoraConfig
from .lora import LoraAdapter, LoraPair

__all__ = ["LoraAdapter", "LoraConfig", "LoraPair"]
