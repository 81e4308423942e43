"""How a prompt is split: the prefix a cache slot already holds, and the chunks its graph calls compute."""
from __future__ import annotations

MIN_SHARED = 16  # tokens: a shorter common prefix is not worth reusing (a copy, a wait, a split prefill)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` have in common."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def reusable(held: list[int], prompt: list[int]) -> int:
    """Leading tokens of `prompt` whose keys and values a cache holding `held` already has: their common prefix
    less the prompt's last two tokens, when that is MIN_SHARED tokens or more; else 0. The rest is computed in
    one call of two tokens or more, as `prefill_chunk` cuts prompts, so the logits equal a whole prefill's."""
    n = min(common_prefix(held, prompt), len(prompt) - 2)
    return n if n >= MIN_SHARED else 0


def prefill_chunk(remaining: int, limit: int) -> int:
    """How many of a prompt's `remaining` uncomputed tokens the next call takes, at most `limit`: never one token
    of a longer prompt, and never leaving one behind (0: wait for a larger limit). GroupQueryAttention's one-token
    path rounds differently from its multi-token path (0.72 logit apart on the int4 default model, enough to
    change greedy tokens), while multi-token calls with a past give bit-identical logits to a whole prefill."""
    if remaining <= limit:
        return remaining
    n = limit - 1 if remaining - limit == 1 else limit
    return n if n >= 2 else 0
