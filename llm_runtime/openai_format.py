"""OpenAI response bodies built from our Completion (shared by batch output and, later, the server)."""
from __future__ import annotations

import time
import uuid

from .completion import Completion


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(c: Completion) -> dict:
    u = c.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def _lp(v: float) -> float:
    return max(v, -9999.0)  # JSON has no -Infinity


def chat_logprobs(lps) -> dict | None:
    """Chat-style logprobs for a sequence of TokenLogprob (None when none were asked for)."""
    if lps is None:
        return None

    def entry(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": _lp(logprob), "bytes": list(token.encode(errors="replace"))}

    return {"content": [{**entry(lp.token, lp.logprob), "top_logprobs": [entry(t, v) for _, t, v in lp.top]}
                        for lp in lps]}


def text_logprobs(lps) -> dict | None:
    """Completions-style logprobs for a sequence of TokenLogprob (None when none were asked for)."""
    if lps is None:
        return None
    return {"tokens": [lp.token for lp in lps], "token_logprobs": [_lp(lp.logprob) for lp in lps],
            "top_logprobs": [{t: _lp(v) for _, t, v in lp.top} for lp in lps], "text_offset": []}


def chat_completion(c: Completion, model: str) -> dict:
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": c.finish_reason, "logprobs": chat_logprobs(c.logprobs)}],
            "usage": usage(c)}


def text_completion(c: Completion, model: str) -> dict:
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": c.text, "finish_reason": c.finish_reason,
                         "logprobs": text_logprobs(c.logprobs)}],
            "usage": usage(c)}
