"""Single-sequence generation: prefill, then one decode step per token, streamed as chunks."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from llm_runtime.kv_cache import KVCache, round_up

from .completion import Chunk
from .output_stream import OutputStream
from .prompt_split import prefill_chunk, reusable
from .request_sampler import RequestSampler
from .runner import ModelRunner, decode_inputs, prefill_inputs


# Long prompts are prefilled in chunks: GroupQueryAttention computes each call's whole query x key rectangle,
# so chunks skip most of its causally masked half. 1,008 tokens of SmolLM2: 15% faster, bit-identical logits.
PREFILL_CHUNK = 256


def prefill(runner: ModelRunner, cache: KVCache, prompt_ids: list[int], cached: int = 0) -> np.ndarray:
    """The prompt, past the `cached` tokens slot 0 already holds, into slot 0's cache, PREFILL_CHUNK tokens per
    call; logits float32 [vocab] of its last token."""
    while cached < len(prompt_ids):
        n = prefill_chunk(len(prompt_ids) - cached, PREFILL_CHUNK)
        logits = runner.run(prefill_inputs(prompt_ids[cached:cached + n], cached=cached), cache)
        cached += n
    return logits[-1]


def stream_tokens(runner: ModelRunner, cache: KVCache, prompt_ids: list[int], sampler: RequestSampler,
                  out: OutputStream, held: list[int]) -> Iterator[Chunk]:
    """The decode loop. The cache's slot 0 holds this sequence. `held`: the prompt tokens whose keys and values
    slot 0 holds from the previous generation; the new prompt's common prefix with them (the history of a
    conversation) is not computed again, only the rest, as a chunked prefill would: bit-identical logits.
    Generated tokens are not kept: the one-token calls that fed them round differently from a prefill."""
    reuse = reusable(held, prompt_ids)
    del held[reuse:]
    cache.ensure_capacity(round_up(len(prompt_ids) + sampler.params.max_tokens))
    logits = prefill(runner, cache, prompt_ids, reuse)
    held += prompt_ids[reuse:]
    token, total = np.zeros(1, np.int64), np.array([len(prompt_ids)])
    step = decode_inputs(token, total)  # refilled in place: one step object for the whole loop
    while True:
        token[0], logprob = sampler.pick(logits)
        chunk = out.add(int(token[0]), logprob)
        yield chunk
        if out.finished:
            return
        total[0] += 1
        logits = runner.run(step, cache)[0]
