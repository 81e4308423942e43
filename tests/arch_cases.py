"""Tiny random configurations for the shared architecture runner: one row per case."""
from __future__ import annotations

from transformers import LlamaConfig

BASE = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)

CASES = {
    "llama-mha": lambda: LlamaConfig(**BASE, num_attention_heads=4, num_key_value_heads=4),
    "llama-gqa2": lambda: LlamaConfig(**BASE, num_attention_heads=4, num_key_value_heads=2),
    "llama-gqa4-tied": lambda: LlamaConfig(**BASE, num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                                           tie_word_embeddings=True),
    "llama-mqa": lambda: LlamaConfig(**BASE, num_attention_heads=4, num_key_value_heads=1),
    "llama-headdim": lambda: LlamaConfig(**BASE, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
    "llama3-rope-bias": lambda: LlamaConfig(**BASE, num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                                            mlp_bias=True, rope_parameters={
                                                "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                "original_max_position_embeddings": 32}),
}
