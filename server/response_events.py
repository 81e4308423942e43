"""One response's typed stream events, as OpenAI's Responses API sends them; the non-streamed reply is the
response that the last event carries (a fold over the same events: one code path).

    response.created, response.in_progress, then per output item, in order:
      a message: response.output_item.added, response.content_part.added, response.output_text.delta ...,
                 response.output_text.done, response.content_part.done, response.output_item.done
      a function call: response.output_item.added (empty arguments), response.function_call_arguments.delta ...,
                 response.function_call_arguments.done, response.output_item.done
    then response.completed (or response.incomplete at max_output_tokens, or response.failed when generation fails)

A request with tools reads the reply through the chat path's tool-call parser (`ToolDeltas`): content deltas
become message text, tool-call deltas function_call items. Every event carries `sequence_number`, counting from 0.
"""
from __future__ import annotations

import copy
import time
import uuid
from dataclasses import dataclass, field

from llm_runtime.completion import Chunk
from llm_runtime.openai.reply import chat_logprobs
from llm_runtime.tools.deltas import ToolDeltas
from llm_runtime.tools.request import ToolRequest


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def new_response(model: str, echo: dict) -> dict:
    """A response object in progress: no output, no usage yet. `echo`: the request's fields as the response
    carries them (response_request.echo); the rest are this server's constants, every field OpenAI's object has."""
    return {"id": new_id("resp"), "object": "response", "created_at": int(time.time()), "status": "in_progress",
            "background": False, "completed_at": None, "error": None, "incomplete_details": None,
            "instructions": None, "max_output_tokens": None, "max_tool_calls": None, "model": model, "output": [],
            "parallel_tool_calls": True, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "service_tier": "default", "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}},
            "tool_choice": "auto", "tools": [], "top_logprobs": 0, "top_p": 1.0, "presence_penalty": 0.0,
            "frequency_penalty": 0.0, "truncation": "disabled", "usage": None, "user": None,
            "safety_identifier": None, "prompt_cache_key": None, "metadata": {}, **echo}


@dataclass
class _Message:
    id: str
    text: list[str] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)


@dataclass
class _Call:
    id: str
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class ResponseEvents:
    """The events of `response` (from `new_response`): `start()`, then `add(chunk)` per engine chunk, then
    `end(finish_reason)` or `fail(message)`; `response` is then the finished object. `tools`: the request's tools,
    whose calls the reply is parsed into (None: the reply is one message)."""

    def __init__(self, response: dict, prompt_tokens: int, want_logprobs: bool, tools: ToolRequest | None = None):
        self.response, self.prompt_tokens, self.want_logprobs = response, prompt_tokens, want_logprobs
        self.deltas = ToolDeltas(tools) if tools is not None else None
        self.sequence = 0
        self.items: list[_Message | _Call] = []  # output items in order; the last one is open until closed
        self.closed: list[dict] = []  # the finished output items
        self.held_logprobs: list[dict] = []  # logprobs of tokens whose text has not come out yet
        self.output_tokens = self.cached_tokens = 0

    def _event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _snapshot(self, kind: str) -> dict:
        return self._event(kind, response=copy.deepcopy(self.response))

    def _part(self, m: _Message) -> dict:
        part = {"type": "output_text", "text": "".join(m.text), "annotations": []}
        return {**part, "logprobs": list(m.logprobs)} if self.want_logprobs else part

    def _item(self, item: _Message | _Call, status: str, done: bool = True) -> dict:
        if isinstance(item, _Call):
            return {"id": item.id, "type": "function_call", "status": status, "call_id": item.call_id,
                    "name": item.name, "arguments": "".join(item.arguments) if done else ""}
        return {"id": item.id, "type": "message", "status": status, "role": "assistant",
                "content": [self._part(item)] if done else []}

    def _where(self, **more) -> dict:
        return {"item_id": self.items[-1].id, "output_index": len(self.items) - 1, **more}

    def start(self) -> list[dict]:
        return [self._snapshot("response.created"), self._snapshot("response.in_progress")]

    def add(self, chunk: Chunk) -> list[dict]:
        """The events of an engine chunk: text deltas and function-call items as the tool parser releases them
        (none while the chunk's text is held: a partial character, markup that may start a call)."""
        self.output_tokens += len(chunk.token_ids)
        if chunk.usage is not None:
            self.cached_tokens = chunk.usage.cached_tokens
        self.held_logprobs += chat_logprobs(chunk.logprobs)["content"] if self.want_logprobs and chunk.logprobs else []
        if self.deltas is None:
            deltas = [{"content": chunk.text}] if chunk.text or self.held_logprobs else []
        else:
            deltas = self.deltas.add(chunk.text, last=chunk.finish_reason is not None)
        out = []
        for d in deltas:
            if "content" in d:
                out += self._text(d["content"])
            for call in d.get("tool_calls", ()):
                out += self._call(call)
        return out

    def _open(self, item: _Message | _Call) -> list[dict]:
        out = self._close("completed") if self.items else []
        self.items.append(item)
        out.append(self._event("response.output_item.added", output_index=len(self.items) - 1,
                               item=self._item(item, "in_progress", done=False)))
        if isinstance(item, _Message):
            out.append(self._event("response.content_part.added", **self._where(content_index=0),
                                   part={"type": "output_text", "text": "", "annotations": [],
                                         **({"logprobs": []} if self.want_logprobs else {})}))
        return out

    def _text(self, text: str) -> list[dict]:
        out = [] if self.items and isinstance(self.items[-1], _Message) else self._open(_Message(new_id("msg")))
        message, lps, self.held_logprobs = self.items[-1], self.held_logprobs, []
        if not text and not lps:
            return out
        message.text.append(text)
        message.logprobs += lps
        return out + [self._event("response.output_text.delta", **self._where(content_index=0), delta=text,
                                  logprobs=lps)]

    def _call(self, part: dict) -> list[dict]:
        """A chat tool-call delta: a call's first opens its function_call item, the rest add argument text."""
        out = []
        if "id" in part:
            self.held_logprobs = []  # the call's markup: no message text to carry them
            out = self._open(_Call(new_id("fc"), part["id"], part["function"]["name"]))
        arguments = part["function"]["arguments"]
        if arguments:
            self.items[-1].arguments.append(arguments)
            out.append(self._event("response.function_call_arguments.delta", **self._where(), delta=arguments))
        return out

    def _close(self, status: str) -> list[dict]:
        """The closing events of the open item."""
        item = self.items[-1]
        done = self._item(item, status)
        self.closed.append(done)
        if isinstance(item, _Call):
            return [self._event("response.function_call_arguments.done", **self._where(), arguments=done["arguments"]),
                    self._event("response.output_item.done", output_index=len(self.items) - 1, item=done)]
        part = done["content"][0]
        return [self._event("response.output_text.done", **self._where(content_index=0), text=part["text"],
                            logprobs=list(item.logprobs)),
                self._event("response.content_part.done", **self._where(content_index=0), part=part),
                self._event("response.output_item.done", output_index=len(self.items) - 1, item=done)]

    def _usage(self) -> dict:
        return {"input_tokens": self.prompt_tokens,
                "input_tokens_details": {"cached_tokens": self.cached_tokens, "cache_write_tokens": 0},
                "output_tokens": self.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.prompt_tokens + self.output_tokens}

    def end(self, finish_reason: str | None) -> list[dict]:
        """The closing events: `length` is an incomplete response (max_output_tokens), anything else completed.
        A reply with no output at all is one empty message."""
        complete = finish_reason != "length"
        status = "completed" if complete else "incomplete"
        out = [] if self.items else self._open(_Message(new_id("msg")))
        out += self._close(status)
        self.response.update(status=status, output=self.closed, usage=self._usage(), completed_at=int(time.time()),
                             incomplete_details=None if complete else {"reason": "max_output_tokens"})
        return out + [self._snapshot(f"response.{status}")]

    def fail(self, message: str) -> list[dict]:
        """Generation failed after the stream began: the output so far, and response.failed."""
        items = self.items or [_Message(new_id("msg"))]
        self.response.update(status="failed", output=self.closed + [self._item(items[-1], "incomplete")],
                             usage=self._usage(), error={"code": "server_error", "message": message})
        return [self._snapshot("response.failed")]
