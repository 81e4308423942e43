"""Tiny random Hugging Face checkpoints made with transformers, for parity tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CORPUS = [
    "Once upon a time there was a tiny model that wanted to be exact.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "Héllo wörld, naïve café! ¿Qué tal? 日本語のテキスト 🙂🚀",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>",
] * 20
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def tiny_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer with ChatML special tokens, trained in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def save_tiny_model(folder: Path, config, seed: int = 0) -> Path:
    """Random weights for `config` (a transformers config) plus tokenizer files, saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # larger-than-init weights make differences between graphs visible
        for p in model.parameters():
            p.normal_(0.0, 0.08 if p.dim() > 1 else 0.3).add_(1.0 if p.dim() == 1 and p.shape[0] == config.hidden_size else 0.0)
    model.save_pretrained(folder)
    tok = PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer(min(config.vocab_size, 400)),
                                  bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    tok.save_pretrained(folder)
    return Path(folder)


def hf_logits(folder: Path, ids: np.ndarray) -> np.ndarray:
    """transformers' logits float32 [B, S, V] for input ids [B, S] (no padding)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.float().numpy()


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
