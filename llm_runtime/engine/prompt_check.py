"""The one check of a prompt against the model, for every door: token ids, vocabulary and context length."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from llm_runtime.errors import ParameterError
from llm_runtime.sampling.params import DEFAULT_MAX_TOKENS, SamplingParams

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's error code


def check_prompt(prompt_ids: list[int], params: SamplingParams, context_length: int,
                 vocab_size: int) -> SamplingParams:
    """Reject what cannot run, naming the parameter; return `params` with `max_tokens` resolved: left out
    (None), it is DEFAULT_MAX_TOKENS capped by the context left after the prompt."""
    if not prompt_ids:
        raise ParameterError("prompt", "prompt must not be empty")
    if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in prompt_ids):
        raise ParameterError("prompt", "prompt token ids must be integers")
    lo, hi = min(prompt_ids), max(prompt_ids)
    if lo < 0 or hi >= vocab_size:
        raise ParameterError("prompt", f"prompt token id {lo if lo < 0 else hi} is outside the vocabulary "
                                       f"(0..{vocab_size - 1})")
    params.check_vocab(vocab_size)
    room = context_length - len(prompt_ids)
    if room <= 0:
        raise ParameterError("prompt", f"This model's maximum context length is {context_length} tokens; the prompt is "
                                       f"{len(prompt_ids)} tokens", CONTEXT_LENGTH_EXCEEDED)
    if params.max_tokens is None:
        max_tokens = min(DEFAULT_MAX_TOKENS, room)
        if params.min_tokens > max_tokens:
            raise ParameterError("min_tokens", f"must be <= {max_tokens} (the tokens left in the context), got "
                                               f"{params.min_tokens}", CONTEXT_LENGTH_EXCEEDED)
        return replace(params, max_tokens=max_tokens)
    if params.max_tokens > room:
        raise ParameterError("max_tokens", f"This model's maximum context length is {context_length} tokens; the prompt is "
                                           f"{len(prompt_ids)} tokens and max_tokens is {params.max_tokens}",
                             CONTEXT_LENGTH_EXCEEDED)
    return params
