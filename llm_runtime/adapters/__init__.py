"""LoRA adapters: one in-memory form (`LoraAdapter`), readers and writers of the file formats, and the slot table
a batch's rows select their adapter from."""
from .config import LoraConfig
from .fit import check_fits, linear_shapes
from .folder import read_folder, write_folder
from .genai_adapter import read_onnx_adapter, write_onnx_adapter
from .gguf_lora import read_gguf_lora
from .lora import LoraAdapter, LoraPair
from .peft_folder import read_peft_folder
from .reader import read_adapter

__all__ = ["LoraAdapter", "LoraConfig", "LoraPair", "check_fits", "linear_shapes", "read_adapter", "read_folder",
           "read_gguf_lora", "read_onnx_adapter", "read_peft_folder", "write_folder", "write_onnx_adapter"]
