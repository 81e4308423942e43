"""Offline batch generation over JSONL: one output line per custom_id, durable as it completes, resumable.

Input lines are `{"custom_id", "prompt" | "messages", request fields...}` or OpenAI Batch API request lines
(`{"custom_id", "method", "url", "body"}`); output lines follow OpenAI's batch output shape. The request fields
go through the server's field policy and request mapping (llm_runtime.openai.request), so a line means what
the same body means to the server; a batch runs one model (a line's `model` that names one of its LoRA adapters
runs with that adapter; any other `model` is not checked), one choice per line (n 1)
and never streams (stream: true is an error line). A line that cannot run becomes
an error line under its custom_id (`line-N` when it has none); a repeated custom_id keeps its first line and
the repeat is only reported (`BatchSummary.duplicates`), so the output has one line per unique custom_id.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from llm_runtime.completion import Chunk
from llm_runtime.engine import QueueFullError
from llm_runtime.openai.reply import ReplyStream, fold
from llm_runtime.sampling.params import SamplingParams
from llm_runtime.tools.request import ToolRequest

from .output import BatchOutput
from .request import BatchRequest, LineError

log = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    written: int = 0  # lines appended by this run
    skipped: int = 0  # lines whose custom_id was already answered
    errors: int = 0  # error lines among `written`
    duplicates: list[str] = field(default_factory=list)  # repeated custom_ids, not answered twice
    interrupted: bool = False


def numbered_lines(src: Path | Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw line) of a JSONL file; an iterable of such pairs passes through."""
    if not isinstance(src, (str, Path)):
        yield from src
        return
    with open(src, "rb") as lines:
        yield from enumerate(lines, 1)


class BatchJob:
    """Runs every unanswered input line through the engine with at most `max_concurrency` requests in flight,
    appending each result in completion order. Setting `stop` stops submitting and cancels what is in flight;
    cancelled requests are not written, so the next run redoes them. `on_line()` is called per input line
    settled by this run (written or duplicate). `src` is a JSONL file or an iterable of (line number, raw line);
    `output` anything with BatchOutput's `answered` and `append`. `params`: the SamplingParams each line's own
    sampling fields apply over (a field a line gives wins); when None, a field a line leaves out takes the
    model's recommended value (`llm.folder.sampling`), then SamplingParams' own, as the server's requests do."""

    def __init__(self, llm, src: Path | Iterable[tuple[int, bytes]], output: BatchOutput, model_name: str, max_concurrency: int,
                 stop: threading.Event | None = None, on_line=None, params: SamplingParams | None = None):
        self.llm, self.src, self.output, self.model_name = llm, src, output, model_name
        self.params = params
        self.defaults = dict(getattr(getattr(llm, "folder", None), "sampling", {}))
        self.adapters = set(getattr(llm, "adapter_names", list)())  # a line's model may name one
        self.max_concurrency = max_concurrency
        self.stop = stop or threading.Event()
        self.on_line = on_line or (lambda: None)
        self.summary = BatchSummary()
        self._seen: set[str] = set()
        self._in_flight: dict[str, object] = {}  # custom_id -> RequestHandle
        self._results: queue.SimpleQueue = queue.SimpleQueue()  # (request, handle, Completion | Exception)
        self._cancelled = False

    def run(self) -> BatchSummary:
        for line_no, raw in numbered_lines(self.src):
            if self.stop.is_set():
                break
            if raw.strip() and (req := self._admit(raw, line_no)) is not None:
                self._submit(req)
        while self._in_flight:
            self._collect()
        self.summary.interrupted = self.stop.is_set()
        return self.summary

    def _admit(self, raw: bytes, line_no: int) -> BatchRequest | None:
        """The line's request if it must run; error, duplicate and already-answered lines are settled here."""
        try:
            req, error = BatchRequest.parse(raw, line_no, self.params, self.defaults), None
        except LineError as e:
            req, error = None, e
        cid = req.custom_id if req else error.custom_id
        if cid in self._seen:
            log.info("line %d: duplicate custom_id %r ignored (its first line is answered)", line_no, cid)
            self.summary.duplicates.append(cid)
            self.on_line()
            return None
        self._seen.add(cid)
        if cid in self.output.answered:
            self.summary.skipped += 1
            return None
        if error is not None:
            self._write_error(cid, error.code, str(error))
            return None
        return req

    def _submit(self, req: BatchRequest) -> None:
        while len(self._in_flight) >= self.max_concurrency and not self.stop.is_set():
            self._collect()
        if self.stop.is_set():
            return
        r = req.request
        tools = r.tool_request(self.llm.template) if r.tools else None
        try:
            ids = self._prompt_ids(req, tools)
            params = r.choice_params(0, tools, self.llm.tokenizer) if tools else r.params
            if r.model in self.adapters:
                params = replace(params, adapter=r.model)
            while True:
                try:
                    handle = self.llm.submit(ids, params)
                    break
                except QueueFullError:  # only when more than max_waiting are in flight: wait for one to end
                    self._collect()
                    if self.stop.is_set():
                        return
        except ValueError as e:  # ParameterError (prompt too long, bad token ids) or a chat template error
            self._write_error(req.custom_id, "invalid_request", str(e))
            return
        self._in_flight[req.custom_id] = handle
        threading.Thread(target=self._wait, args=(req, handle, len(ids), tools), daemon=True).start()

    def _prompt_ids(self, req: BatchRequest, tools: ToolRequest | None) -> list[int]:
        if req.chat:
            text = tools.prompt(self.llm.template, req.prompt) if tools else self.llm.render_chat(req.prompt)
            return self.llm.encode(text, special=False)
        return self.llm.encode(req.prompt) if isinstance(req.prompt, str) else req.prompt

    def _wait(self, req: BatchRequest, handle, prompt_tokens: int, tools: ToolRequest | None) -> None:
        """The reply body, folded from the request's stream exactly as the server folds it."""
        r = req.request
        try:  # whatever fails, the request gets its line: the job waits for every request in flight
            echo = None
            if r.echo:
                prompt = r.prompts[0]
                echo = [prompt if isinstance(prompt, str) else
                        self.llm.tokenizer.decode(prompt, skip_special_tokens=False)]
            model = r.model if r.model in self.adapters else self.model_name
            reply = ReplyStream(r.chat, model, 1, r.params.logprobs, True, prompt_tokens, echo, tools)
            c = handle.result()  # the stream folded: one chunk holding it all
            whole = Chunk(c.text, tuple(c.token_ids), c.finish_reason, tuple(c.logprobs or ()), c.usage)
            chunks = reply.start() + reply.add(0, whole) + reply.end()
            result = fold(chunks, r.chat, 1, r.params.logprobs)
        except Exception as e:  # an engine failure: the request becomes an error line
            result = e
        self._results.put((req, handle, result))

    def _collect(self) -> None:
        """Write the next finished request, waking every 0.1 s to cancel everything once `stop` is set."""
        if self.stop.is_set() and not self._cancelled:
            self._cancelled = True
            for handle in self._in_flight.values():
                handle.cancel()
        try:
            req, handle, result = self._results.get(timeout=0.1)
        except queue.Empty:
            return
        del self._in_flight[req.custom_id]
        if handle.cancelled:
            return  # cut short by a stop: not an answer
        if isinstance(result, Exception):
            self._write_error(req.custom_id, "generation_failed", str(result))
            return
        self.output.append(req.custom_id, {"status_code": 200, "request_id": result["id"], "body": result})
        self.summary.written += 1
        self.on_line()

    def _write_error(self, custom_id: str, code: str, message: str) -> None:
        self.output.append(custom_id, error={"code": code, "message": message})
        self.summary.written += 1
        self.summary.errors += 1
        self.on_line()
