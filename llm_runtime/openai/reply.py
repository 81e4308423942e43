"""OpenAI reply bodies, for the server and the batch job alike: engine chunks become OpenAI stream chunks, and the
non-streamed reply is a fold over those same chunks (one code path for both). A chat request that offered tools
streams its choices' text through a tool-call parser: content deltas without call markup, and tool-call deltas as
OpenAI sends them (per call index: `id`, `type` and `function.name` once, then `function.arguments` fragments)."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from llm_runtime.completion import Chunk
from llm_runtime.tools.deltas import ToolDeltas, fold_deltas
from llm_runtime.tools.request import ToolRequest


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _lp(v: float) -> float:
    return max(v, -9999.0)  # JSON has no -Infinity


def _entry(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": _lp(logprob), "bytes": list(token.encode(errors="replace"))}


def chat_logprobs(lps) -> dict:
    """Chat-style logprobs of a sequence of TokenLogprob."""
    return {"content": [{**_entry(lp.token, lp.logprob), "top_logprobs": [_entry(t, v) for _, t, v in lp.top]}
                        for lp in lps], "refusal": None}


def text_logprobs(lps, offset: int) -> dict:
    """Completions-style logprobs of a sequence of TokenLogprob whose first token starts at character `offset`
    of the choice's text; each next token starts where the text of the ones before it ends."""
    offsets = []
    for lp in lps:
        offsets.append(offset)
        offset += len(lp.token)
    return {"tokens": [lp.token for lp in lps], "token_logprobs": [_lp(lp.logprob) for lp in lps],
            "top_logprobs": [{t: _lp(v) for _, t, v in lp.top} for lp in lps], "text_offset": offsets}


class ReplyStream:
    """The OpenAI stream chunks of one request's choices: `start()` (chat: each choice's role; echo: its prompt),
    then `add(i, chunk)` per engine chunk of choice i, then `end()` (the usage chunk, when asked for). `tools`: the
    chat request's tools, whose calls each choice's text is parsed into. `n`: choices per prompt (choice i is
    prompt i // n's)."""

    def __init__(self, chat: bool, model: str, choices: int, want_logprobs: bool, include_usage: bool,
                 prompt_tokens: int, echo: list[str] | None = None, tools: ToolRequest | None = None, n: int = 1):
        self.chat, self.want_logprobs, self.include_usage = chat, want_logprobs, include_usage
        self.tool_deltas = [ToolDeltas(tools) for _ in range(choices)] if tools is not None else None
        self.choices, self.prompt_tokens, self.echo = choices, prompt_tokens, echo
        self.base = {"id": new_id("chatcmpl" if chat else "cmpl"),
                     "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": int(time.time()), "model": model}
        if include_usage:
            self.base["usage"] = None
        self.completion_tokens = 0
        self.n = n
        self.cached = [0] * choices  # each choice's prompt tokens taken from the prefix cache
        self.accepted_prediction = self.rejected_prediction = 0  # drafted prediction tokens, over all choices
        self.offsets = [0] * choices  # characters of each choice's tokens so far (text_offset), after any echo

    def _chunk(self, choice: dict) -> dict:
        return {**self.base, "choices": [choice]}

    def start(self) -> list[dict]:
        if self.chat:
            return [self._chunk({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}) for i in range(self.choices)]
        if not self.echo:
            return []
        out = []
        for i, text in enumerate(self.echo):
            self.offsets[i] = len(text)
            out.append(self._chunk({"index": i, "text": text, "logprobs": None, "finish_reason": None}))
        return out

    def add(self, i: int, chunk: Chunk) -> list[dict]:
        """Choice i's OpenAI chunks for this engine chunk (none when it carries nothing to send yet)."""
        self.completion_tokens += len(chunk.token_ids)
        if chunk.usage is not None:
            self.cached[i] = chunk.usage.cached_tokens
            self.accepted_prediction += chunk.usage.accepted_prediction_tokens
            self.rejected_prediction += chunk.usage.rejected_prediction_tokens
        if self.tool_deltas is not None:
            return self._tool_chunks(i, chunk)
        if not chunk.text and not chunk.finish_reason and not chunk.logprobs:
            return []  # text held back (a partial character or a possible stop string)
        return [self._one(i, chunk)]

    def _tool_chunks(self, i: int, chunk: Chunk) -> list[dict]:
        """Content and tool-call deltas from the parser (markup held until it is known to be a call); the engine
        chunk's logprobs ride on the first of them; the last engine chunk ends with an empty delta that carries
        finish_reason ("tool_calls" when the choice made calls and ended on its own)."""
        parser = self.tool_deltas[i]
        deltas = parser.add(chunk.text, last=chunk.finish_reason is not None)
        lps = chat_logprobs(chunk.logprobs) if self.want_logprobs and chunk.logprobs else None
        if lps is not None and not deltas:
            deltas = [{}]
        out = [self._chunk({"index": i, "delta": d, "logprobs": lps if k == 0 else None, "finish_reason": None})
               for k, d in enumerate(deltas)]
        if chunk.finish_reason:
            out.append(self._chunk({"index": i, "delta": {}, "logprobs": None,
                                    "finish_reason": parser.finish_reason(chunk.finish_reason)}))
        return out

    def _one(self, i: int, chunk: Chunk) -> dict:
        if self.chat:
            delta = {"content": chunk.text} if chunk.text or not chunk.finish_reason else {}
            lps = chat_logprobs(chunk.logprobs) if self.want_logprobs and chunk.logprobs else None
            return self._chunk({"index": i, "delta": delta, "logprobs": lps, "finish_reason": chunk.finish_reason})
        lps = text_logprobs(chunk.logprobs, self.offsets[i]) if self.want_logprobs else None
        self.offsets[i] += sum(len(lp.token) for lp in chunk.logprobs)
        return self._chunk({"index": i, "text": chunk.text, "logprobs": lps, "finish_reason": chunk.finish_reason})

    def end(self) -> list[dict]:
        if not self.include_usage:
            return []
        # a prompt's n choices share its prefix among themselves: what the cache held before is the least they reused
        cached = sum(min(self.cached[p:p + self.n]) for p in range(0, self.choices, self.n))
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                 "total_tokens": self.prompt_tokens + self.completion_tokens,
                 "prompt_tokens_details": {"cached_tokens": cached}}
        if self.chat:
            usage["completion_tokens_details"] = {"reasoning_tokens": 0,
                                                  "accepted_prediction_tokens": self.accepted_prediction,
                                                  "rejected_prediction_tokens": self.rejected_prediction}
        return [{**self.base, "choices": [], "usage": usage}]


def fold(chunks: Iterable[dict], chat: bool, choices: int, want_logprobs: bool) -> dict:
    """The non-streamed reply: a stream's chunks (with usage) joined per choice."""
    deltas, reasons, usage, head = [[] for _ in range(choices)], [None] * choices, None, None
    lps = [({"content": [], "refusal": None} if chat else
            {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []})
           if want_logprobs else None for _ in range(choices)]
    for c in chunks:
        head = head or c
        usage = c.get("usage") or usage
        for ch in c["choices"]:
            i = ch["index"]
            deltas[i].append(ch["delta"] if chat else {"content": ch["text"]})
            reasons[i] = ch["finish_reason"] or reasons[i]
            for key, values in (ch["logprobs"] or {}).items():
                if isinstance(values, list):
                    lps[i][key].extend(values)
    out = []
    for i in range(choices):
        message = fold_deltas(deltas[i])
        if chat:
            body = {"message": {"role": "assistant", **message, "refusal": None, "annotations": []}}
        else:
            body = {"text": message["content"]}
        out.append({"index": i, **body, "logprobs": lps[i], "finish_reason": reasons[i]})
    return {"id": head["id"], "object": "chat.completion" if chat else "text_completion", "created": head["created"],
            "model": head["model"], "choices": out, "usage": usage}
