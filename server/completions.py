"""/v1/chat/completions and /v1/completions: a checked body becomes engine requests, then a stream or a reply.

Everything that grows with the input (template rendering, tokenization, detokenizing echoed token ids) runs in
a worker thread, off the event loop."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

from llm_runtime.engine import QueueFullError
from llm_runtime.errors import ParameterError
from llm_runtime.openai.reply import ReplyStream, fold
from llm_runtime.openai.request import OpenAIRequest, parse_request
from llm_runtime.tools.request import ToolRequest

from .errors import APIError, bad_request
from .metrics import Metrics
from .streaming import openai_chunks

log = logging.getLogger(__name__)


@dataclass
class Submitted:
    handles: list  # choice index -> RequestHandle
    prompt_tokens: int
    echo: list[str] | None  # choice index -> the prompt's text, when echoed
    tools: ToolRequest | None  # chat: the tools offered, whose calls the reply is parsed into


def parse(body: dict, endpoint: str, defaults: dict | None = None) -> OpenAIRequest:
    """The one request mapping, its errors as 400s naming the field; `defaults`: the model's sampling defaults."""
    try:
        return parse_request(body, endpoint, defaults=defaults)
    except ParameterError as e:
        raise bad_request(str(e), e.param, e.code) from None


def _refused(e: ParameterError, chat: bool) -> APIError:
    param = "messages" if chat and e.param == "prompt" else e.param
    return bad_request(str(e), param, e.code)


def submit(llm, r: OpenAIRequest, loop, key: str = "") -> Submitted:
    """Template, tokenize, check and queue every choice (all or none): in a worker thread, off the event loop.
    `key`: the API key's id (server/app.py's Gate), for the suffix cache's "key" mode."""
    param = "messages" if r.chat else "prompt"
    tools = r.tool_request(llm.template) if r.tools else None
    try:
        if r.chat:
            texts = [tools.prompt(llm.template, r.messages) if tools else llm.render_chat(r.messages)]
            prompts = [llm.encode(_valid_text(texts[0], param), special=False)]  # the template holds the specials
        else:
            prompts = [llm.encode(_valid_text(p, param)) if isinstance(p, str) else p for p in r.prompts]
            texts = [p if isinstance(p, str) else llm.tokenizer.decode(p, skip_special_tokens=False)
                     for p in r.prompts] if r.echo else None
    except ParameterError as e:
        raise _refused(e, r.chat) from None
    handles = []
    try:
        for ids in prompts:
            for j in range(r.n):
                params = r.choice_params(j, tools, llm.tokenizer) if tools else r.choice_params(j)
                handles.append(llm.submit(ids, params, loop=loop, key=key))
    except BaseException as e:
        for h in handles:
            h.cancel()
        if isinstance(e, QueueFullError):
            raise APIError(429, str(e), code="rate_limit_exceeded", headers={"Retry-After": "1"}) from None
        if isinstance(e, ParameterError):
            raise _refused(e, r.chat) from None
        raise
    echo = [texts[k // r.n] for k in range(len(handles))] if texts is not None and not r.chat else None
    return Submitted(handles, sum(map(len, prompts)), echo, tools)


def _valid_text(text: str, param: str) -> str:
    try:
        text.encode()  # lone surrogates (valid JSON escapes, not text) raise UnicodeEncodeError
    except UnicodeError:
        raise ParameterError(param, f"{param} is not valid unicode text") from None
    return text


async def complete(request: Request, r: OpenAIRequest, llm, model: str, metrics: Metrics) -> Response:
    """Run a parsed request on `llm`'s engine: server-sent events when it streams, else the folded JSON reply."""
    start = time.perf_counter()
    key = getattr(request.state, "key_id", "")
    s = await anyio.to_thread.run_sync(submit, llm, r, asyncio.get_running_loop(), key)
    reply = ReplyStream(r.chat, model, r.choices, r.params.logprobs, r.include_usage or not r.stream,
                        s.prompt_tokens, s.echo, s.tools, r.n)
    chunks = openai_chunks(s.handles, reply, metrics, start)
    if r.stream:
        return EventSourceResponse(_sse(chunks, s.handles), ping=15, sep="\n")
    collecting = asyncio.ensure_future(_collect(chunks))
    gone = asyncio.ensure_future(disconnected(request))
    await asyncio.wait({collecting, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not collecting.done():  # the client left: free its slots now
        _cancel(s.handles)
        collecting.cancel()
        return Response(status_code=499)
    if e := collecting.exception():
        if isinstance(e, ParameterError):  # a constraint that fails mid-reply (llm_runtime/structured)
            raise _refused(e, r.chat)
        log.error("generation failed", exc_info=e)
        raise APIError(500, f"generation failed: {e}", "server_error")
    return JSONResponse(fold(collecting.result(), r.chat, r.choices, r.params.logprobs))


async def _collect(chunks) -> list[dict]:
    return [c async for c in chunks]


async def disconnected(request: Request) -> None:
    """Returns when the client has gone."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sse(chunks, handles):
    try:
        async for c in chunks:
            yield json.dumps(c, separators=(",", ":"))
    except ParameterError as e:  # a constraint that fails mid-reply: the request's error, as an event
        yield json.dumps(bad_request(str(e), e.param, e.code).body())
    except Exception as e:  # a failure after streaming began: an error event, then [DONE]
        log.error("generation failed", exc_info=e)
        yield json.dumps(APIError(500, f"generation failed: {e}", "server_error").body())
    finally:  # a client gone mid-stream cancels its requests in the engine at once
        _cancel(handles)
    yield "[DONE]"


def _cancel(handles) -> None:
    for h in handles:
        h.cancel()
