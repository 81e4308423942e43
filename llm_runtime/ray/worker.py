"""The Ray Data actor of a batch job: one model and engine per actor, the local batch job's loop per block."""
from __future__ import annotations

import json
import queue
import threading

import pyarrow as pa

from llm_runtime.batch.job import BatchJob
from llm_runtime.batch.output import result_line
from llm_runtime.llm import LLM
from llm_runtime.llm_config import LLMConfig
from llm_runtime.sampling.params import SamplingParams

# every output block has this schema; response and error hold JSON text (a block's structs would differ)
OUTPUT_SCHEMA = pa.schema([("id", pa.string()), ("custom_id", pa.string()), ("response", pa.string()),
                           ("error", pa.string())])
YIELD_EVERY_S = 1.0  # results leave the actor at least this often, so the driver writes them as they finish


class RowSink:
    """BatchJob's output inside an actor: result lines collected in memory, in completion order."""

    def __init__(self):
        self.answered: set[str] = set()
        self.lines: queue.SimpleQueue = queue.SimpleQueue()

    def append(self, custom_id: str, response: dict | None = None, error: dict | None = None) -> None:
        self.answered.add(custom_id)
        self.lines.put(result_line(custom_id, response, error))


class BatchWorker:
    """A stateful `map_batches` class: loads the model once, then runs each block of requests through the
    same continuous-batching engine and BatchJob as `llm-runtime batch`. Input rows hold `request` (one JSONL
    line: text or bytes) and optionally `line` (its line number), or the request's fields as columns. `params`:
    the caller's SamplingParams, which the job applies each row's fields to, or a dict of request fields added
    to each row that lacks them."""

    def __init__(self, config: LLMConfig, model_name: str, params: SamplingParams | dict | None = None):
        self.llm = LLM(config)
        self.model_name, self.max_concurrency = model_name, config.engine.max_concurrency
        self.params = params if isinstance(params, SamplingParams) else None
        self.defaults = params if isinstance(params, dict) else {}

    def __call__(self, block: pa.Table):
        """Yields tables of OUTPUT_SCHEMA as requests finish (at least every YIELD_EVERY_S while any finish)."""
        sink, done, failed = RowSink(), threading.Event(), []
        job = BatchJob(self.llm, self._lines(block), sink, self.model_name, self.max_concurrency, params=self.params)

        def run() -> None:
            try:
                job.run()
            except BaseException as e:  # raised below, in Ray's task: the block fails and Ray Data reports it
                failed.append(e)
            finally:
                done.set()

        threading.Thread(target=run, name="batch-block", daemon=True).start()
        while not done.is_set():
            done.wait(YIELD_EVERY_S)
            if rows := _drain(sink.lines):
                yield _table(rows)
        if rows := _drain(sink.lines):
            yield _table(rows)
        if failed:
            raise failed[0]

    def _lines(self, block: pa.Table) -> list[tuple[int, bytes]]:
        rows = block.to_pylist()
        numbers = [r.pop("line", None) or 0 for r in rows]
        return [(n, self._with_defaults(_raw(r))) for n, r in zip(numbers, rows)]

    def _with_defaults(self, raw: bytes) -> bytes:
        """Request fields from `defaults` where the line has none (in the body of an OpenAI batch line)."""
        if not self.defaults:
            return raw
        try:
            obj = json.loads(raw)
        except ValueError:
            return raw  # reported as invalid JSON by the job
        if isinstance(obj, dict):
            target = obj.get("body") if isinstance(obj.get("body"), dict) else obj
            for k, v in self.defaults.items():
                target.setdefault(k, v)
        return json.dumps(obj).encode()


def _raw(row: dict) -> bytes:
    """A row's request as one JSON line: its `request` column, else its non-null columns as an object."""
    if "request" in row:
        r = row["request"]
        return r if isinstance(r, bytes) else str(r).encode("utf-8", "surrogatepass")
    return json.dumps({k: v for k, v in row.items() if v is not None}, default=str).encode()


def _drain(q: queue.SimpleQueue) -> list[dict]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def _table(rows: list[dict]) -> pa.Table:
    def text(v):
        return None if v is None else json.dumps(v)

    return pa.table({"id": [r["id"] for r in rows], "custom_id": [r["custom_id"] for r in rows],
                     "response": [text(r["response"]) for r in rows], "error": [text(r["error"]) for r in rows]},
                    schema=OUTPUT_SCHEMA)


def output_line(row: dict) -> dict:
    """An output row of `batch()` back as the local job's JSONL line (response and error as objects)."""
    return {"id": row["id"], "custom_id": row["custom_id"],
            "response": None if row["response"] is None else json.loads(row["response"]),
            "error": None if row["error"] is None else json.loads(row["error"])}
