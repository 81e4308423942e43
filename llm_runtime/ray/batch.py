"""`batch(dataset, model=...)`: a Ray Dataset of requests -> a Ray Dataset of results, on `map_batches`."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import ray.data
from ray.data import ActorPoolStrategy

from llm_runtime.graph.providers import CAPABILITIES, resolve
from llm_runtime.models.resolver import model_name as served_name
from llm_runtime.models.resolver import resolve_model
from llm_runtime.sampling.params import SamplingParams

from .worker import BatchWorker

CALLS_PER_ACTOR = 2  # two blocks share an actor's engine, so one block's tail overlaps the next block's start


def batch(dataset: ray.data.Dataset, model: str | Path = "default", params: SamplingParams | dict | None = None, *,
          replicas: int = 1, threads_per_replica: int = 0, max_concurrency: int = 16, provider: str = "cpu",
          model_name: str | None = None) -> ray.data.Dataset:
    """Generate for every row of `dataset` on `replicas` Ray actors, each loading the model once and running
    the continuous-batching engine with `threads_per_replica` onnxruntime threads (0: this machine's cores
    divided among the replicas) and `max_concurrency` sequences at once.

    Rows hold `request` (one line of a batch input file, text or bytes; `line`: its line number, for the
    `line-N` id of a line without custom_id) or the request's fields as columns (`custom_id`, `prompt` or
    `messages`, sampling fields). `params` (SamplingParams, or a dict of request fields) fills the fields a row
    does not give. The result is lazy: rows `id`, `custom_id`, `response`, `error` as the local batch job
    writes them, with `response` and `error` as JSON text (`worker.output_line` turns a row back into the
    JSONL line). One row per input row, in completion order; no deduplication and no resume (`run_file` does
    both for files). The model is resolved (built on first use) here; its folder must be readable at the same
    path on every node.
    """
    if replicas < 1 or max_concurrency < 1 or threads_per_replica < 0:
        raise ValueError("replicas and max_concurrency must be >= 1, threads_per_replica >= 0")
    folder = resolve_model(model, CAPABILITIES[resolve(provider)].build_provider)
    threads = threads_per_replica or max(1, (os.cpu_count() or 1) // replicas)
    name = model_name or served_name(model)
    worker_args = dict(model=str(folder), model_name=name, threads=threads, max_concurrency=max_concurrency,
                       provider=provider, defaults=request_defaults(params))
    pool = ActorPoolStrategy(size=replicas, max_tasks_in_flight_per_actor=CALLS_PER_ACTOR,
                             max_concurrent_calls_per_actor=CALLS_PER_ACTOR, enable_true_multi_threading=True)
    return dataset.map_batches(BatchWorker, batch_format="pyarrow", batch_size=max_concurrency, compute=pool,
                               fn_constructor_kwargs=worker_args, num_cpus=threads)


def request_defaults(params: SamplingParams | dict | None) -> dict:
    """Request fields from `params`: a dict as given; a SamplingParams' fields that differ from the defaults."""
    if params is None or isinstance(params, dict):
        return dict(params or {})
    base = SamplingParams()
    out = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)
           if getattr(params, f.name) != getattr(base, f.name)}
    if "stop" in out:
        out["stop"] = list(out["stop"])
    if "logit_bias" in out:
        out["logit_bias"] = {str(k): v for k, v in out["logit_bias"].items()}
    return out
