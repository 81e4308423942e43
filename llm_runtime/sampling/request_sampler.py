"""Per-request sampling state: the composed processors and sampler, the rng and the token history."""
from __future__ import annotations

import numpy as np

from llm_runtime.completion import TokenLogprob

from .params import SamplingParams
from .samplers import TokenHistory, logprobs_of, make_logits_processors, make_rng, make_sampler, top_logprobs


class RequestSampler:
    """Built once per request; `pick(logits)` is all the decode step calls."""

    def __init__(self, params: SamplingParams, prompt_ids: list[int], eos_ids, token_text=None):
        self.params = params
        self.process = make_logits_processors(params, eos_ids)
        self.sample = make_sampler(params)
        self.rng = make_rng(params.seed)
        self.history = TokenHistory(prompt_ids)
        self.token_text = token_text or str

    # logits: float32 [vocab] -> (token id, its logprob entry when asked for)
    def pick(self, logits: np.ndarray) -> tuple[int, TokenLogprob | None]:
        token = self.sample(self.process(logits, self.history), self.rng)
        self.history.add(token)
        if not self.params.logprobs:
            return token, None
        lp = logprobs_of(logits)
        top = tuple((i, self.token_text(i), v) for i, v in top_logprobs(lp, self.params.top_logprobs))
        return token, TokenLogprob(token, self.token_text(token), float(lp[token]), top)
