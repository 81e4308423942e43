"""Offline batch generation over JSONL: resumable, one output line per custom_id, nothing lost.

Input lines: {"custom_id", "prompt" | "messages", sampling fields...} or OpenAI Batch API request lines
({"custom_id", "method", "url", "body"}). Output lines follow OpenAI's batch output shape.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .openai_format import chat_completion, text_completion
from .sampling_params import ParameterError, SamplingParams

log = logging.getLogger(__name__)

# request field -> SamplingParams field; everything else in a line is ignored
SAMPLING_FIELDS = {"max_tokens": "max_tokens", "max_completion_tokens": "max_tokens", "temperature": "temperature",
                   "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "seed": "seed", "stop": "stop",
                   "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
                   "repetition_penalty": "repetition_penalty", "logit_bias": "logit_bias", "min_tokens": "min_tokens",
                   "ignore_eos": "ignore_eos"}
URLS = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}


@dataclass
class BatchRequest:
    custom_id: str
    kind: str  # "chat" | "completion"
    payload: str | list  # prompt text or messages
    params: SamplingParams


@dataclass
class BatchSummary:
    done: int = 0  # lines written by this run
    skipped: int = 0  # custom_ids already in the output
    errors: int = 0
    duplicates: list[str] = field(default_factory=list)
    interrupted: bool = False


class LineError(ValueError):
    def __init__(self, custom_id: str, code: str, message: str):
        super().__init__(message)
        self.custom_id, self.code = custom_id, code


def parse_line(text: str, line_no: int) -> BatchRequest:
    """One input line -> a request; LineError (with the custom_id to report it under) otherwise."""
    fallback = f"line-{line_no}"  # lines without a usable custom_id are reported under their line number
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise LineError(fallback, "invalid_json", f"line {line_no} is not valid JSON: {e.msg}") from None
    if not isinstance(obj, dict):
        raise LineError(fallback, "invalid_request", f"line {line_no} is not a JSON object")
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        raise LineError(fallback, "invalid_request", f"line {line_no} has no string custom_id")
    body, kind = obj, None
    if "body" in obj:
        body, kind = obj["body"], URLS.get(obj.get("url"))
        if kind is None or not isinstance(body, dict):
            raise LineError(cid, "invalid_request", f"unsupported url {obj.get('url')!r} (use {', '.join(URLS)})")
    if "messages" in body:
        kind, payload = kind or "chat", body["messages"]
    elif "prompt" in body:
        kind, payload = kind or "completion", body["prompt"]
        if not isinstance(payload, str):
            raise LineError(cid, "invalid_request", "prompt must be a string")
    else:
        raise LineError(cid, "invalid_request", "the request has neither prompt nor messages")
    fields = {SAMPLING_FIELDS[k]: v for k, v in body.items() if k in SAMPLING_FIELDS and v is not None}
    if body.get("logprobs"):
        fields.update(logprobs=True, top_logprobs=int(body.get("top_logprobs") or (body["logprobs"] if kind == "completion" else 0)))
    try:
        return BatchRequest(cid, kind, payload, SamplingParams(**fields))
    except (ParameterError, TypeError, ValueError) as e:
        raise LineError(cid, "invalid_request", str(e)) from None


def completed_ids(out: Path) -> set[str]:
    """custom_ids already answered in `out`; a torn last line (a killed run) is cut off first."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    good_end, ids = 0, set()
    for line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        try:
            ids.add(json.loads(line)["custom_id"])
            good_end += len(line) + 1
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            break
    if good_end < len(data):
        log.warning("dropping a torn line at the end of %s", out)
        with open(out, "r+b") as f:
            f.truncate(good_end)
    return ids


class BatchWriter:
    """Appends one JSON line per result and makes it durable before the next."""

    def __init__(self, out: Path, model: str):
        self.f = open(out, "a", encoding="utf-8")
        self.model = model

    def close(self) -> None:
        self.f.close()

    def _write(self, obj: dict) -> None:
        self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def result(self, req: BatchRequest, completion) -> None:
        body = (chat_completion if req.kind == "chat" else text_completion)(completion, self.model)
        self._write({"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": req.custom_id,
                     "response": {"status_code": 200, "request_id": body["id"], "body": body}, "error": None})

    def error(self, custom_id: str, code: str, message: str) -> None:
        self._write({"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id, "response": None,
                     "error": {"code": code, "message": message}})


def run_batch(llm, src: Path, out: Path, max_concurrency: int, stop: threading.Event, progress=None) -> BatchSummary:
    """Run every not-yet-answered line of `src` through the engine, at most `max_concurrency` at once."""
    summary, done = BatchSummary(), completed_ids(out)
    seen: set[str] = set()
    results: queue.Queue = queue.Queue()
    in_flight: dict[str, tuple] = {}
    writer = BatchWriter(out, llm.folder.path.name)

    def wait(req, handle):
        try:
            results.put((req, handle.result(), None))
        except Exception as e:  # a failed request becomes an error line
            results.put((req, None, e))

    def collect() -> None:
        req, completion, err = results.get()
        handle = in_flight.pop(req.custom_id)[0]
        if handle.cancelled:
            return  # cut short by an interruption: redone by the next run
        if err is not None:
            writer.error(req.custom_id, "generation_failed", str(err))
            summary.errors += 1
        else:
            writer.result(req, completion)
        summary.done += 1
        if progress:
            progress(completion.usage.completion_tokens if completion else 0)

    try:
        with open(src, encoding="utf-8") as lines:
            for line_no, text in enumerate(lines, 1):
                if stop.is_set():
                    break
                if not text.strip():
                    continue
                try:
                    req = parse_line(text, line_no)
                except LineError as e:
                    if e.custom_id not in done and e.custom_id not in seen:
                        seen.add(e.custom_id)
                        writer.error(e.custom_id, e.code, str(e))
                        summary.errors += 1
                        summary.done += 1
                        if progress:
                            progress(0)
                    continue
                if req.custom_id in seen:
                    summary.duplicates.append(req.custom_id)
                    log.warning("line %d: duplicate custom_id %r ignored", line_no, req.custom_id)
                    continue
                seen.add(req.custom_id)
                if req.custom_id in done:
                    summary.skipped += 1
                    continue
                while len(in_flight) >= max_concurrency:
                    collect()
                try:
                    handle = llm.submit(req.payload if req.kind == "completion" else _chat_ids(llm, req.payload),
                                        req.params)
                except ValueError as e:
                    writer.error(req.custom_id, getattr(e, "code", "invalid_request"), str(e))
                    summary.errors += 1
                    summary.done += 1
                    continue
                thread = threading.Thread(target=wait, args=(req, handle), daemon=True)
                in_flight[req.custom_id] = (handle, thread)
                thread.start()
        if stop.is_set():
            for handle, _ in in_flight.values():
                handle.cancel()
        while in_flight:
            collect()
    finally:
        writer.close()
    summary.interrupted = stop.is_set()
    return summary


def _chat_ids(llm, messages) -> list[int]:
    return llm.encode(llm.render_chat(messages), special=False)
