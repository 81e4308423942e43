"""OpenAI response bodies built from our Completion (shared by batch output and, later, the server)."""
from __future__ import annotations

import time
import uuid

from .completion import Completion, TokenLogprob


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(c: Completion) -> dict:
    u = c.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def chat_logprobs(lps: list[TokenLogprob] | None) -> dict | None:
    if lps is None:
        return None
    return {"content": [{"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode()),
                         "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for _, t, v in lp.top]}
                        for lp in lps]}


def chat_completion(c: Completion, model: str) -> dict:
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": c.finish_reason, "logprobs": chat_logprobs(c.logprobs)}],
            "usage": usage(c)}


def text_completion(c: Completion, model: str) -> dict:
    lps = None
    if c.logprobs is not None:
        lps = {"tokens": [lp.token for lp in c.logprobs], "token_logprobs": [lp.logprob for lp in c.logprobs],
               "top_logprobs": [{t: v for _, t, v in lp.top} for lp in c.logprobs], "text_offset": []}
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": lps}],
            "usage": usage(c)}
