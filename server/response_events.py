"""One response's typed stream events, as OpenAI's Responses API sends them; the non-streamed reply is the
response that the last event carries (a fold over the same events: one code path).

    response.created, response.in_progress, response.output_item.added, response.content_part.added,
    response.output_text.delta ..., response.output_text.done, response.content_part.done,
    response.output_item.done, then response.completed (or response.incomplete at max_output_tokens, or
    response.failed when generation fails)

Every event carries `sequence_number`, counting from 0.
"""
from __future__ import annotations

import copy
import time
import uuid

from llm_runtime.completion import Chunk
from llm_runtime.openai_reply import chat_logprobs


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def new_response(model: str, *, instructions: str | None, previous_response_id: str | None, store: bool,
                 temperature: float | None, top_p: float | None, max_output_tokens: int | None,
                 top_logprobs: int | None, metadata: dict | None, text_format: dict | None = None) -> dict:
    """A response object in progress: no output, no usage yet."""
    return {"id": new_id("resp"), "object": "response", "created_at": int(time.time()), "status": "in_progress",
            "background": False, "completed_at": None, "error": None, "incomplete_details": None,
            "instructions": instructions, "max_output_tokens": max_output_tokens, "max_tool_calls": None,
            "model": model, "output": [], "parallel_tool_calls": True, "previous_response_id": previous_response_id,
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": store,
            "temperature": temperature, "text": {"format": text_format or {"type": "text"}}, "tool_choice": "auto",
            "tools": [],
            "top_logprobs": top_logprobs, "top_p": top_p, "truncation": "disabled", "usage": None, "user": None,
            "metadata": metadata or {}}


class ResponseEvents:
    """The events of `response` (from `new_response`) with one assistant message: `start()`, then `add(chunk)` per
    engine chunk, then `end(finish_reason)` or `fail(message)`; `response` is then the finished object."""

    def __init__(self, response: dict, prompt_tokens: int, want_logprobs: bool):
        self.response, self.prompt_tokens, self.want_logprobs = response, prompt_tokens, want_logprobs
        self.sequence = 0
        self.item_id = new_id("msg")
        self.text: list[str] = []
        self.logprobs: list[dict] = []
        self.output_tokens = 0

    def _event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _snapshot(self, kind: str) -> dict:
        return self._event(kind, response=copy.deepcopy(self.response))

    def _part(self) -> dict:
        part = {"type": "output_text", "text": "".join(self.text), "annotations": []}
        return {**part, "logprobs": list(self.logprobs)} if self.want_logprobs else part

    def _item(self, status: str, content: list[dict]) -> dict:
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def _where(self) -> dict:
        return {"item_id": self.item_id, "output_index": 0, "content_index": 0}

    def start(self) -> list[dict]:
        return [self._snapshot("response.created"), self._snapshot("response.in_progress"),
                self._event("response.output_item.added", output_index=0, item=self._item("in_progress", [])),
                self._event("response.content_part.added", **self._where(),
                            part={"type": "output_text", "text": "", "annotations": [],
                                  **({"logprobs": []} if self.want_logprobs else {})})]

    def add(self, chunk: Chunk) -> list[dict]:
        """The delta event of an engine chunk; none while the chunk holds no text (a partial character)."""
        self.output_tokens += len(chunk.token_ids)
        lps = chat_logprobs(chunk.logprobs)["content"] if self.want_logprobs and chunk.logprobs else []
        self.logprobs += lps
        if not chunk.text and not lps:
            return []
        self.text.append(chunk.text)
        return [self._event("response.output_text.delta", **self._where(), delta=chunk.text, logprobs=lps)]

    def _usage(self) -> dict:
        # cached_tokens: the engine reports reused prompt tokens in total (/metrics), not per request
        return {"input_tokens": self.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": self.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.prompt_tokens + self.output_tokens}

    def end(self, finish_reason: str | None) -> list[dict]:
        """The closing events: `length` is an incomplete response (max_output_tokens), anything else completed."""
        complete = finish_reason != "length"
        status = "completed" if complete else "incomplete"
        part = self._part()
        item = self._item(status, [part])
        self.response.update(status=status, output=[item], usage=self._usage(), completed_at=int(time.time()),
                             incomplete_details=None if complete else {"reason": "max_output_tokens"})
        return [self._event("response.output_text.done", **self._where(), text=part["text"],
                            logprobs=list(self.logprobs)),
                self._event("response.content_part.done", **self._where(), part=part),
                self._event("response.output_item.done", output_index=0, item=item),
                self._snapshot(f"response.{status}")]

    def fail(self, message: str) -> list[dict]:
        """Generation failed after the stream began: the text so far, and response.failed."""
        self.response.update(status="failed", output=[self._item("incomplete", [self._part()])],
                             usage=self._usage(), error={"code": "server_error", "message": message})
        return [self._snapshot("response.failed")]
