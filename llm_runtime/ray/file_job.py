"""The file job on Ray (`llm-runtime batch ... --ray`): the local job's guarantees with Ray Data doing the work.

The driver is the only writer. It reads the input (JSONL lines, or Parquet rows as JSON lines), skips the
custom_ids its output file already answers and repeated ids, and hands the rest to `batch()`. Actors return
results as they finish; the driver appends each to the output through BatchOutput (locked, flushed and
fsync'd per line, a torn last line cut off on the next open). A kill of the driver at any point loses only
results not yet appended, and the rerun computes exactly those: one line per custom_id, no duplicates. Parquet
output is this JSONL log (`OUT.parquet.jsonl`), converted to OUT.parquet by an atomic rename once complete.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from llm_runtime.batch.job import numbered_lines
from llm_runtime.batch.output import BatchOutput
from llm_runtime.batch.request import BatchRequest, LineError
from llm_runtime.llm_config import LLMConfig
from llm_runtime.sampling.params import SamplingParams

from .batch import batch
from .worker import OUTPUT_SCHEMA, output_line

log = logging.getLogger(__name__)


@dataclass
class RaySummary:
    requests: int = 0  # lines written by this run
    skipped: int = 0  # already answered by an earlier run
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # from submitting the dataset to the last line written
    duplicates: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


def run_file(src: Path, out: Path, model: str | Path | LLMConfig = "default", *, address: str | None = None,
             replicas: int = 1, params: SamplingParams | dict | None = None) -> RaySummary:
    """Answer every custom_id of `src` (JSONL or .parquet) into `out` (JSONL, or .parquet) on a Ray cluster
    (`address`: "auto", "ray://host:10001", or None for a local cluster), `model` (or an LLMConfig) on each of
    `replicas` actors; rerunning resumes."""
    config = model if isinstance(model, LLMConfig) else LLMConfig.of(model)
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise FileNotFoundError(f"input file not found: {src}")
    parquet_out = out.suffix == ".parquet"
    log_path = out.with_name(out.name + ".jsonl") if parquet_out else out
    log_path.parent.mkdir(parents=True, exist_ok=True)
    output = BatchOutput(log_path)  # locks, cuts off a torn last line, reads the ids answered
    try:
        done = _parquet_ids(out) if parquet_out else set()
        summary = RaySummary()
        pending = _pending(src, output.answered | done, summary)
        if pending:
            if not ray.is_initialized():
                ray.init(address=address, log_to_driver=False)
            start = time.perf_counter()
            blocks = max(1, -(-len(pending) // config.engine.max_concurrency))  # one block per batch_size rows
            dataset = ray.data.from_items(pending, override_num_blocks=blocks)
            results = batch(dataset, config, params, replicas=replicas)
            for block in results.iter_batches(batch_format="pyarrow", batch_size=None):
                for row in block.to_pylist():
                    _write(output, output_line(row), summary)
            summary.seconds = time.perf_counter() - start
    finally:
        output.close()
    if parquet_out:
        _to_parquet(log_path, out)
    return summary


def _pending(src: Path, answered: set[str], summary: RaySummary) -> list[dict]:
    """Rows {line, request} for the input lines still to answer; repeated ids are recorded and dropped."""
    seen, rows = set(), []
    for line_no, raw in _input_lines(src):
        if not raw.strip():
            continue
        try:
            cid = BatchRequest.parse(raw, line_no).custom_id
        except LineError as e:
            cid = e.custom_id
        if cid in seen:
            summary.duplicates.append(cid)
            continue
        seen.add(cid)
        if cid in answered:
            summary.skipped += 1
        else:
            rows.append({"line": line_no, "request": raw})
    return rows


def _input_lines(src: Path):
    if src.suffix != ".parquet":
        return numbered_lines(src)
    rows = pq.read_table(src).to_pylist()
    return ((i, json.dumps({k: v for k, v in r.items() if v is not None}, default=str).encode())
            for i, r in enumerate(rows, 1))


def _write(output: BatchOutput, line: dict, summary: RaySummary) -> None:
    output.write(line)
    summary.requests += 1
    if line["error"] is not None:
        summary.errors += 1
        return
    usage = line["response"]["body"].get("usage") or {}
    summary.prompt_tokens += usage.get("prompt_tokens", 0)
    summary.completion_tokens += usage.get("completion_tokens", 0)


def _parquet_ids(path: Path) -> set[str]:
    return set(pq.read_table(path, columns=["custom_id"]).column(0).to_pylist()) if path.is_file() else set()


def _to_parquet(log_path: Path, out: Path) -> None:
    """Merge the JSONL log into OUT.parquet (its earlier rows first, one row per custom_id), then drop the log.
    Written to a temporary file and renamed: a kill leaves the old Parquet file or the new one."""
    tables = [pq.read_table(out)] if out.is_file() else []
    lines = [json.loads(x) for x in log_path.read_bytes().splitlines() if x.strip()]
    tables.append(pa.table({k: [r[k] if k in ("id", "custom_id") or r[k] is None else json.dumps(r[k])
                                for r in lines] for k in OUTPUT_SCHEMA.names}, schema=OUTPUT_SCHEMA))
    merged, seen, keep = pa.concat_tables(tables), set(), []
    for i, cid in enumerate(merged.column("custom_id").to_pylist()):
        if cid not in seen:
            seen.add(cid)
            keep.append(i)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(merged.take(keep), tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)
    log_path.unlink()


def print_summary(summary: RaySummary, out: Path) -> None:
    """The final summary on stderr: requests, tokens, tokens/s, errors."""
    if summary.duplicates:
        shown = ", ".join(summary.duplicates[:5]) + (", ..." if len(summary.duplicates) > 5 else "")
        print(f"warning: {len(summary.duplicates)} duplicate custom_id line(s) ignored: {shown}", file=sys.stderr)
    print(f"{summary.requests} requests written ({summary.skipped} already done, {summary.errors} errors) to {out}; "
          f"{summary.prompt_tokens} prompt + {summary.completion_tokens} completion tokens in "
          f"{summary.seconds:.1f} s, {summary.tokens_per_s:.1f} tokens/s", file=sys.stderr)
