"""Engine chunks -> OpenAI stream chunks; the non-streaming reply is a fold over the same chunks."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from llm_runtime.completion import Chunk
from llm_runtime.openai_format import new_id

from .metrics import Metrics


def _chat_logprobs(chunk: Chunk) -> dict | None:
    if not chunk.logprobs:
        return None
    return {"content": [{"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode()),
                         "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for _, t, v in lp.top]}
                        for lp in chunk.logprobs]}


def _text_logprobs(chunk: Chunk) -> dict | None:
    if not chunk.logprobs:
        return None
    return {"tokens": [lp.token for lp in chunk.logprobs], "token_logprobs": [lp.logprob for lp in chunk.logprobs],
            "top_logprobs": [{t: v for _, t, v in lp.top} for lp in chunk.logprobs], "text_offset": []}


async def _merged(handles) -> AsyncIterator[tuple[int, Chunk]]:
    """(choice index, chunk) from every handle, as they arrive."""
    if len(handles) == 1:
        async for chunk in handles[0]:
            yield 0, chunk
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i, h):
        try:
            async for chunk in h:
                await queue.put((i, chunk))
            await queue.put((i, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            await queue.put((i, e))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    try:
        live = len(handles)
        while live:
            i, item = await queue.get()
            if item is None:
                live -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()


async def openai_chunks(handles, chat: bool, model: str, include_usage: bool, metrics: Metrics,
                        prompt_tokens: int) -> AsyncIterator[dict]:
    """OpenAI stream chunks: role first (chat), content deltas, finish_reason on the last one, usage."""
    cid, created = new_id("chatcmpl" if chat else "cmpl"), int(time.time())
    obj = "chat.completion.chunk" if chat else "text_completion"
    base = {"id": cid, "object": obj, "created": created, "model": model}
    if include_usage:
        base["usage"] = None
    if chat:
        for i in range(len(handles)):
            yield {**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]}
    completion_tokens, start, last = 0, time.perf_counter(), {}
    async for i, chunk in _merged(handles):
        now = time.perf_counter()
        metrics.token_times(now - last.get(i, start), first=i not in last, count=len(chunk.token_ids))
        last[i] = now
        completion_tokens += len(chunk.token_ids)
        if not chunk.text and not chunk.finish_reason and not chunk.logprobs:
            continue
        if chat:
            delta = {"content": chunk.text} if chunk.text or not chunk.finish_reason else {}
            choice = {"index": i, "delta": delta, "logprobs": _chat_logprobs(chunk), "finish_reason": chunk.finish_reason}
        else:
            choice = {"index": i, "text": chunk.text, "logprobs": _text_logprobs(chunk), "finish_reason": chunk.finish_reason}
        yield {**base, "choices": [choice]}
    if include_usage:
        yield {**base, "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                                "total_tokens": prompt_tokens + completion_tokens}}


async def fold(chunks: AsyncIterator[dict], chat: bool, n: int) -> dict:
    """The non-streaming reply: the same chunks, joined per choice."""
    texts, reasons, lps, usage, head = [[] for _ in range(n)], [None] * n, [None] * n, None, None
    async for c in chunks:
        head = head or c
        usage = c.get("usage") or usage
        for ch in c["choices"]:
            i = ch["index"]
            texts[i].append(ch["delta"].get("content") or "" if chat else ch["text"])
            reasons[i] = ch["finish_reason"] or reasons[i]
            if ch.get("logprobs"):
                lps[i] = _join_logprobs(lps[i], ch["logprobs"], chat)
    choices = []
    for i in range(n):
        text = "".join(texts[i])
        body = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        choices.append({"index": i, **body, "logprobs": lps[i], "finish_reason": reasons[i]})
    return {"id": head["id"], "object": "chat.completion" if chat else "text_completion", "created": head["created"],
            "model": head["model"], "choices": choices, "usage": usage}


def _join_logprobs(acc: dict | None, part: dict, chat: bool) -> dict:
    if acc is None:
        return {k: list(v) for k, v in part.items()}
    for k, v in part.items():
        acc[k].extend(v)
    return acc
