"""Offline batch generation over JSONL: one output line per custom_id, durable as it completes, resumable.

Input lines are `{"custom_id", "prompt" | "messages", request fields...}` or OpenAI Batch API request lines
(`{"custom_id", "method", "url", "body"}`); output lines follow OpenAI's batch output shape. The request fields
go through the server's field policy and request mapping (llm_runtime.openai.request), so a line means what
the same body means to the server; a batch runs one model (`model` is not checked), one choice per line (n 1)
and never streams (stream: true is an error line). A line that cannot run becomes
an error line under its custom_id (`line-N` when it has none); a repeated custom_id keeps its first line and
the repeat is only reported (`BatchSummary.duplicates`), so the output has one line per unique custom_id.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llm_runtime.completion import Chunk
from llm_runtime.engine import QueueFullError
from llm_runtime.errors import ParameterError
from llm_runtime.openai.reply import ReplyStream, fold
from llm_runtime.openai.request import OpenAIRequest, parse_request
from llm_runtime.sampling.params import SamplingParams
from llm_runtime.tools.request import ToolRequest

try:
    import fcntl
except ImportError:  # Windows: no advisory lock on the output file
    fcntl = None

log = logging.getLogger(__name__)

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}  # url -> endpoint


class LineError(ValueError):
    """An input line that cannot run; reported as an error line under `custom_id`."""

    def __init__(self, custom_id: str, code: str, message: str):
        super().__init__(message)
        self.custom_id, self.code = custom_id, code


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    request: OpenAIRequest

    @property
    def chat(self) -> bool:
        return self.request.chat

    @property
    def prompt(self) -> str | list:
        """Text or token ids; the chat messages when `chat`."""
        return self.request.messages if self.chat else self.request.prompts[0]

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @classmethod
    def parse(cls, raw: bytes, line_no: int, params: SamplingParams | None = None,
              defaults: dict | None = None) -> BatchRequest:
        """One input line -> a request, or LineError; the line's sampling fields apply over `params`, and the
        fields it leaves out take `defaults` (the model's recommended sampling) when `params` is None."""
        try:
            obj = json.loads(raw)
        except ValueError as e:  # invalid JSON or invalid UTF-8
            raise LineError(f"line-{line_no}", "invalid_json", f"line {line_no} is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise LineError(f"line-{line_no}", "invalid_request", f"line {line_no} is not a JSON object")
        cid = obj.get("custom_id")
        if not isinstance(cid, str) or not cid:
            raise LineError(f"line-{line_no}", "invalid_request",
                            f"line {line_no} has no custom_id (a non-empty string)")
        body, endpoint = _body(obj, cid)
        try:
            request = parse_request(body, endpoint, params, defaults)
        except ParameterError as e:
            raise LineError(cid, "invalid_request", str(e)) from None
        if request.n != 1:
            raise LineError(cid, "invalid_request", "n must be 1 in a batch job; give each sample its own custom_id")
        if request.stream:
            raise LineError(cid, "invalid_request", "stream must be false in a batch job (each line is one reply)")
        if not request.chat and len(request.prompts) != 1:
            raise LineError(cid, "invalid_request", "prompt must be a string or a list of token ids (one prompt "
                                                    "per line)")
        return cls(cid, request)


def _body(obj: dict, cid: str) -> tuple[dict, str]:
    """The request body and its endpoint ("chat" or "completions"), for both input forms."""
    if "body" in obj or "url" in obj:  # an OpenAI Batch API request line
        url, body = obj.get("url"), obj.get("body")
        if url not in ENDPOINTS:
            raise LineError(cid, "invalid_request", f"unsupported url {url!r} (use {' or '.join(ENDPOINTS)})")
        if obj.get("method", "POST") != "POST":
            raise LineError(cid, "invalid_request", f"unsupported method {obj.get('method')!r} (use POST)")
        if not isinstance(body, dict):
            raise LineError(cid, "invalid_request", "body must be a JSON object")
        key = "messages" if ENDPOINTS[url] == "chat" else "prompt"
        if key not in body:
            raise LineError(cid, "invalid_request", f"a {url} body needs {key}")
        return body, ENDPOINTS[url]
    if "prompt" in obj and "messages" in obj:
        raise LineError(cid, "invalid_request", "the request has both prompt and messages; give one")
    if "prompt" not in obj and "messages" not in obj:
        raise LineError(cid, "invalid_request", "the request has neither prompt nor messages")
    body = {k: v for k, v in obj.items() if k != "custom_id"}
    return body, "chat" if "messages" in obj else "completions"


class BatchOutput:
    """The output JSONL, opened for appending under an exclusive lock. Each line is flushed and fsync'd
    before the next, so a kill loses at most the line being written, which the next open cuts off."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "ab")
        if fcntl is not None:
            try:
                fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.f.close()
                raise ValueError(f"{path} is being written by another batch job") from None
        try:
            self.answered = self._scan()  # custom_ids already in the file
        except ValueError:
            self.f.close()
            raise

    def _scan(self) -> set[str]:
        """Read the ids answered so far; a torn last line (no newline, or not a result) is truncated away."""
        ids, good_end, torn_at = set(), 0, None
        with open(self.path, "rb") as f:
            for line_no, line in enumerate(f, 1):
                complete = line.endswith(b"\n")
                if complete and not line.strip():
                    good_end += 0 if torn_at else len(line)
                    continue
                if torn_at is not None:
                    raise ValueError(f"{self.path} line {torn_at} is not a batch result line; fix or remove it")
                cid = _answered_id(line) if complete else None
                if cid is None:
                    torn_at = line_no
                    continue
                ids.add(cid)
                good_end += len(line)
        if torn_at is not None:
            log.warning("%s: dropping the torn line %d left by an interrupted run", self.path, torn_at)
            self.f.truncate(good_end)
        return ids

    def append(self, custom_id: str, response: dict | None = None, error: dict | None = None) -> None:
        self.write(result_line(custom_id, response, error))

    def write(self, line: dict) -> None:
        """Append one result line (`result_line`'s shape), durable before this returns."""
        self.f.write(json.dumps(line).encode() + b"\n")  # ASCII: no U+2028 or lone surrogate to split or fail on
        self.f.flush()
        os.fsync(self.f.fileno())
        self.answered.add(line["custom_id"])

    def close(self) -> None:
        self.f.close()


def result_line(custom_id: str, response: dict | None = None, error: dict | None = None) -> dict:
    """One OpenAI batch output line: a response body or an error, under `custom_id`."""
    return {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id, "response": response, "error": error}


def _answered_id(line: bytes) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    cid = obj.get("custom_id") if isinstance(obj, dict) else None
    return cid if isinstance(cid, str) else None


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
            reply = ReplyStream(r.chat, self.model_name, 1, r.params.logprobs, True, prompt_tokens, echo, tools)
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
