"""genai_config.json: the file onnxruntime-genai reads to run a decoder folder (our runtime reads it too)."""
from __future__ import annotations

from .architectures import Architecture
from .config import ModelConfig
from .contract import GraphContract
from .precision import GENAI_PROVIDER, BuildOptions


def genai_config(cfg: ModelConfig, arch: Architecture, opts: BuildOptions, contract: GraphContract) -> dict:
    provider = GENAI_PROVIDER[opts.target]
    eos = list(cfg.eos_token_ids)
    return {
        "model": {
            "bos_token_id": cfg.bos_token_id,
            "context_length": cfg.max_positions,
            "decoder": {
                "session_options": {
                    "log_id": "onnxruntime-genai",
                    "provider_options": [{provider: {}}] if provider else [],
                },
                "filename": "model.onnx",
                "head_size": cfg.head_dim,
                "hidden_size": cfg.hidden_size,
                **contract.genai_decoder_io(),
                "num_attention_heads": cfg.num_heads,
                "num_hidden_layers": cfg.num_layers,
                "num_key_value_heads": cfg.num_kv_heads,
            },
            "eos_token_id": eos[0] if len(eos) == 1 else eos,
            "pad_token_id": cfg.pad_token_id if cfg.pad_token_id is not None else (eos[0] if eos else 0),
            "type": arch.genai_type,
            "vocab_size": cfg.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": cfg.max_positions,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }
