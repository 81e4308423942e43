"""Tiny random configurations for the shared architecture runner: one row per case.

Sliding windows are 8 tokens and LongRoPE's original context 12, so the 20-token prompt and 32 greedy tokens run
well past both; the cases that need it say so in PROMPTS.
"""
from __future__ import annotations

from transformers import (
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

BASE = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
PROMPT = [5, 17, 33, 100, 7, 250, 9, 11, 3, 42]
LONG_PROMPT = PROMPT + [61, 8, 140, 27, 300, 19, 4, 77, 12, 200]
WINDOW, ORIGINAL_CONTEXT = 8, 12


def longrope(pairs: int, **extra) -> dict:
    """Phi-3 style LongRoPE parameters for `pairs` rotary frequency pairs."""
    short = [1.0 + 0.05 * k for k in range(pairs)]
    return dict(rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": short,
                                 "long_factor": [2.0 + 0.5 * k for k in range(pairs)], **extra},
                original_max_position_embeddings=ORIGINAL_CONTEXT)


PHI3 = dict(BASE, pad_token_id=0)
GEMMA = dict(BASE, num_attention_heads=4, num_key_value_heads=2, head_dim=16)

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
    # Qwen2/2.5: biases on Q/K/V only; sliding window only with use_sliding_window, from max_window_layers up
    "qwen2-gqa": lambda: Qwen2Config(**BASE, num_attention_heads=4, num_key_value_heads=2),
    "qwen2-tied-window": lambda: Qwen2Config(**BASE, num_attention_heads=4, num_key_value_heads=1,
                                             tie_word_embeddings=True, use_sliding_window=True,
                                             sliding_window=WINDOW, max_window_layers=1),
    # Qwen3: per-head RMSNorm on Q and K; head_dim independent of hidden_size
    "qwen3-headdim32": lambda: Qwen3Config(**BASE, num_attention_heads=4, num_key_value_heads=2, head_dim=32),
    "qwen3-bias-tied": lambda: Qwen3Config(**BASE, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
                                           attention_bias=True, tie_word_embeddings=True),
    # Mistral: one sliding window for every layer
    "mistral-window": lambda: MistralConfig(**BASE, num_attention_heads=4, num_key_value_heads=2,
                                            sliding_window=WINDOW),
    "mistral-headdim32": lambda: MistralConfig(**BASE, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                                               sliding_window=None),
    # Phi-3/3.5: fused qkv_proj and gate_up_proj; LongRoPE on both sides of the original context
    "phi3-window": lambda: Phi3Config(**PHI3, num_attention_heads=4, num_key_value_heads=4, sliding_window=WINDOW),
    "phi3-longrope": lambda: Phi3Config(**PHI3, num_attention_heads=4, num_key_value_heads=2, **longrope(8)),
    "phi3-longrope-long": lambda: Phi3Config(**PHI3, num_attention_heads=4, num_key_value_heads=2, **longrope(8)),
    "phi3-partial-rotary": lambda: Phi3Config(**PHI3, num_attention_heads=2, num_key_value_heads=1,
                                              tie_word_embeddings=True, **longrope(8, partial_rotary_factor=0.5)),
    # Gemma: (1 + w) norms, sqrt(hidden) embedding scale, gelu-tanh MLP
    "gemma-mqa": lambda: GemmaConfig(**dict(GEMMA, num_key_value_heads=1)),
    "gemma-headdim32-gelu": lambda: GemmaConfig(**dict(GEMMA, head_dim=32), hidden_act="gelu"),
    # Gemma 2: sandwich norms, soft-caps, query_pre_attn_scalar, alternating sliding and global layers
    "gemma2-window": lambda: Gemma2Config(**GEMMA, sliding_window=WINDOW, query_pre_attn_scalar=24,
                                          attn_logit_softcapping=2.0, final_logit_softcapping=3.0),
    "gemma2-defaults": lambda: Gemma2Config(**dict(GEMMA, num_key_value_heads=4), sliding_window=WINDOW),
    # Gemma 3: Q/K norms, local and global rope bases, one global layer in `sliding_window_pattern`
    "gemma3-pattern2": lambda: Gemma3TextConfig(**dict(GEMMA, num_hidden_layers=3), sliding_window=WINDOW,
                                                sliding_window_pattern=2, query_pre_attn_scalar=16,
                                                rope_scaling={"rope_type": "linear", "factor": 4.0}),
    "gemma3-headdim32": lambda: Gemma3TextConfig(**dict(GEMMA, head_dim=32, num_key_value_heads=1),
                                                 sliding_window=WINDOW, final_logit_softcapping=4.0,
                                                 layer_types=["full_attention", "sliding_attention"]),
}

# case -> (prompt, length of the batch test's shorter row); the rest use (PROMPT, 4)
PROMPTS = {
    **{case: (LONG_PROMPT, 4) for case in ("qwen2-tied-window", "mistral-window", "phi3-window", "gemma2-window",
                                           "gemma2-defaults", "gemma3-pattern2", "gemma3-headdim32")},
    # LongRoPE picks one table per call from the batch's total length, so both rows stay past the original context
    "phi3-longrope-long": (LONG_PROMPT, 14),
    "phi3-partial-rotary": (LONG_PROMPT, 14),
}


def prompt(case: str) -> tuple[list[int], int]:
    return PROMPTS.get(case, (PROMPT, 4))

# transformers' `generate` re-encodes a Phi-3 sequence once it outgrows the original context (its
# prepare_inputs_for_generation drops the cache there), so every key turns to the long factors. The graph keeps
# each cached key's rotation, as transformers' forward with a cache does; for a case whose decode crosses the
# original context the greedy reference is that forward loop.
FORWARD_REFERENCE = {"phi3-longrope"}
