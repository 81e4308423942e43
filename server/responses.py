"""OpenAI's Responses API: POST /v1/responses (a JSON reply, or typed server-sent events), GET and DELETE
/v1/responses/{id}, GET /v1/responses/{id}/input_items. A stored response (store: true, the default) is continued
with `previous_response_id`: its conversation comes back from the store, the new input follows it, and the engine's
prefix cache computes only the new part. Stored rows belong to the API key that made them
(server/response_store.py)."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

from llm_runtime.chat.messages import normalize_messages
from llm_runtime.errors import ParameterError
from llm_runtime.openai.request import OpenAIRequest

from .completions import disconnected, submit
from .errors import ERROR_RESPONSES, APIError, bad_request
from .metrics import Metrics
from .models import ModelRegistry
from .response_events import ResponseEvents, new_response
from .response_input import output_messages
from .response_request import ResponsesRequest, echo, parse_responses
from .response_schemas import DeletedResponse, InputItemList, ResponseObject, ResponsesBody
from .response_store import ResponseStore, owner_of
from .schemas import ok
from .streaming import merged

log = logging.getLogger(__name__)
RESPONSE_ID = "resp_"  # how every response id here begins (response_events.new_response)
RENAMED = {"messages": "input", "prompt": "input", "max_tokens": "max_output_tokens",  # chat's names -> ours
           "text.format": "text"}


def _parse(body: dict, models: ModelRegistry) -> ResponsesRequest:
    try:
        return parse_responses(body, models.sampling_defaults(body.get("model")))
    except ParameterError as e:
        raise bad_request(str(e), e.param, e.code) from None


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id {response_id!r} not found.", param="response_id", code="not_found")


def router(models: ModelRegistry, store: ResponseStore, metrics: Metrics, keyed: bool) -> APIRouter:
    """The routes over the served `models`. `keyed`: the server checks API keys, so each key owns what it stores
    (without keys everything is one owner's)."""
    routes = APIRouter()

    def owner(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        return owner_of(auth[7:].strip() if keyed and auth[:7].lower() == "bearer " else None)

    @routes.post("/v1/responses", response_model=None, responses={**ok(ResponseObject, True), **ERROR_RESPONSES})
    async def create(body: ResponsesBody, request: Request):
        r = _parse(body.body(), models)
        models.check(r.model)
        who = owner(request)
        history = []
        if r.previous_response_id:
            history = await anyio.to_thread.run_sync(store.conversation, who, r.previous_response_id)
            if history is None:
                raise bad_request(f"Previous response with id {r.previous_response_id!r} not found.",
                                  "previous_response_id", "previous_response_not_found")
        conversation = history + r.messages
        start = time.perf_counter()
        async with models.use(r.model) as llm:
            s = await anyio.to_thread.run_sync(_submit, llm, r, history, asyncio.get_running_loop(), who)
        response = new_response(r.model, echo(r))
        events = ResponseEvents(response, s.prompt_tokens, r.params.logprobs, s.tools)

        async def finish(done: dict) -> None:
            if r.store:
                await anyio.to_thread.run_sync(store.put, who, done, conversation + output_messages(done["output"]),
                                               r.items)

        stream = _events(s.handles[0], events, metrics, start, finish)
        if r.stream:
            return EventSourceResponse(_sse(stream, s.handles[0]), ping=15, sep="\n")
        collecting = asyncio.ensure_future(_drain(stream))
        gone = asyncio.ensure_future(disconnected(request))
        await asyncio.wait({collecting, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not collecting.done():  # the client left: free its slot now, store nothing
            s.handles[0].cancel()
            collecting.cancel()
            return Response(status_code=499)
        collecting.result()
        if response["status"] == "failed":
            raise APIError(500, response["error"]["message"], "server_error")
        return JSONResponse(response)

    @routes.get("/v1/responses/{response_id}", response_model=ResponseObject, responses=ERROR_RESPONSES)
    async def retrieve(response_id: str, request: Request):
        found = await anyio.to_thread.run_sync(store.get, owner(request), response_id)
        if found is None:
            raise _not_found(response_id)
        return JSONResponse(found)

    @routes.api_route("/v1/responses/{response_id}", methods=["POST", "PUT", "PATCH"], include_in_schema=False)
    async def other_method(response_id: str):
        """A response allows GET and DELETE; a name that is no response id is a route this server lacks
        (OpenAI's /v1/responses/compact, /v1/responses/input_tokens): 404, as any unknown route."""
        if not response_id.startswith(RESPONSE_ID):
            raise APIError(404, "Not Found", code="not_found")
        raise APIError(405, "Method Not Allowed", code="method_not_allowed", headers={"Allow": "GET, DELETE"})

    @routes.get("/v1/responses/{response_id}/input_items", response_model=InputItemList, responses=ERROR_RESPONSES)
    async def list_input_items(response_id: str, request: Request, after: str | None = None,
                               limit: int = Query(20, ge=1, le=100), order: Literal["asc", "desc"] = "desc"):
        items = await anyio.to_thread.run_sync(store.input_items, owner(request), response_id)
        if items is None:
            raise _not_found(response_id)
        return _page(items if order == "asc" else items[::-1], after, limit)

    @routes.delete("/v1/responses/{response_id}", response_model=DeletedResponse, responses=ERROR_RESPONSES)
    async def delete(response_id: str, request: Request):
        if not await anyio.to_thread.run_sync(store.delete, owner(request), response_id):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    @routes.delete("/v1/responses", responses=ERROR_RESPONSES)
    async def purge(request: Request):
        """An extension: forget every response stored under the caller's key (another key's stay)."""
        return {"object": "response.purge", "deleted": await anyio.to_thread.run_sync(store.purge, owner(request))}

    return routes


def _page(items: list[dict], after: str | None, limit: int) -> dict:
    """One page of a list, starting after the item whose id is `after`."""
    start = 0
    if after is not None:
        start = next((i + 1 for i, item in enumerate(items) if item["id"] == after), None)
        if start is None:
            raise bad_request(f"no input item with id {after!r}", "after")
    page = items[start:start + limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": start + limit < len(items)}


def _submit(llm, r: ResponsesRequest, history: list[dict], loop, key: str):
    """Template, tokenize, check and queue (in a worker thread); errors name the field they come from, and
    `input[i]` (or `instructions`, `previous_response_id`) where chat's would name `messages[k]`."""
    system = [{"role": "system", "content": r.instructions}] if r.instructions else []
    origins = ["instructions"] * len(system) + ["previous_response_id"] * len(history) + list(r.origins)
    try:
        chat = OpenAIRequest(True, r.model, normalize_messages(system + history + r.messages), [], r.params,
                             tools=r.tools, tool_choice=r.tool_choice, parallel_tool_calls=r.parallel_tool_calls)
        return submit(llm, chat, loop, key)
    except ParameterError as e:
        raise _named(bad_request(str(e), "input", e.code), origins) from None
    except APIError as e:
        raise _named(e, origins) from None


def _named(e: APIError, origins: list[str]) -> APIError:
    """`e` in the Responses API's names: `messages[k]` as the item it came from, chat's fields as ours."""
    k = re.search(r"\bmessages\[(\d+)\]", e.message)
    if k and int(k.group(1)) < len(origins):
        origin = origins[int(k.group(1))]
        e.message = e.message.replace(k.group(0), origin, 1)
        e.param = origin.split("[")[0]
    e.param = RENAMED.get(e.param, e.param)
    return e


async def _events(handle, events: ResponseEvents, metrics: Metrics, start: float,
                  finish: Callable[[dict], Awaitable[None]]) -> AsyncIterator[dict]:
    """The response's events as the engine generates; `finish(response)` stores the finished response before
    the last event goes out (so a client that saw it can continue from it at once)."""
    for e in events.start():
        yield e
    reason, last = None, None
    try:
        async for _, chunk in merged([handle]):
            if chunk.token_ids:
                now = time.perf_counter()
                metrics.token_times(now - (last or start), first=last is None, count=len(chunk.token_ids))
                last = now
            reason = chunk.finish_reason or reason
            for e in events.add(chunk):
                yield e
        closing = events.end(reason)
    except Exception as e:  # the engine failed mid-generation: response.failed, with the text so far
        log.error("generation failed", exc_info=e)
        closing = events.fail(f"generation failed: {e}")
    await finish(events.response)
    for e in closing:
        yield e


async def _drain(stream: AsyncIterator[dict]) -> None:
    async for _ in stream:
        pass


async def _sse(stream: AsyncIterator[dict], handle):
    sequence = 0
    try:
        async for e in stream:
            sequence = e["sequence_number"] + 1
            yield {"event": e["type"], "data": json.dumps(e, separators=(",", ":"))}
    except Exception as e:  # storing failed: an error event ends the stream
        log.error("the response failed", exc_info=e)
        error = {"type": "error", "sequence_number": sequence, "code": "server_error", "message": str(e),
                 "param": None}
        yield {"event": "error", "data": json.dumps(error)}
    finally:  # a client gone mid-stream cancels its request in the engine at once
        handle.cancel()
