"""`batch(dataset, model=...)`: a Ray Dataset of requests -> a Ray Dataset of results, on `map_batches`."""
from __future__ import annotations

from pathlib import Path

import ray.data
from ray.data import ActorPoolStrategy

from llm_runtime.llm_config import LLMConfig
from llm_runtime.models.resolver import model_name as served_name
from llm_runtime.sampling.params import SamplingParams

from .worker import BatchWorker

CALLS_PER_ACTOR = 2  # two blocks share an actor's engine, so one block's tail overlaps the next block's start


def batch(dataset: ray.data.Dataset, model: str | Path | LLMConfig = "default",
          params: SamplingParams | dict | None = None, *, replicas: int = 1,
          model_name: str | None = None) -> ray.data.Dataset:
    """Generate for every row of `dataset` on `replicas` Ray actors, each loading the model once and running
    the continuous-batching engine. `model` is a model, or the LLMConfig each actor loads (its engine's
    `max_concurrency` sequences at once, speculation, threads: 0 divides this machine's cores among the
    replicas).

    Rows hold `request` (one line of a batch input file, text or bytes; `line`: its line number, for the
    `line-N` id of a line without custom_id) or the request's fields as columns (`custom_id`, `prompt` or
    `messages`, sampling fields). `params` fills what a row does not give, as in the local job: a SamplingParams
    is the base each row's own fields are applied to (`BatchJob`'s `params`); a dict is request fields added to
    each row that lacks them. The result is lazy: rows `id`, `custom_id`, `response`, `error` as the local batch
    job writes them, with `response` and `error` as JSON text (`worker.output_line` turns a row back into the
    JSONL line). One row per input row, in completion order; no deduplication and no resume (`run_file` does
    both for files). The model is resolved (built on first use) here; its folder must be readable at the same
    path on every node.
    """
    args = worker_arguments(model, params, replicas, model_name)
    config = args["config"]
    pool = ActorPoolStrategy(size=replicas, max_tasks_in_flight_per_actor=CALLS_PER_ACTOR,
                             max_concurrent_calls_per_actor=CALLS_PER_ACTOR, enable_true_multi_threading=True)
    return dataset.map_batches(BatchWorker, batch_format="pyarrow", batch_size=config.engine.max_concurrency,
                               compute=pool, fn_constructor_kwargs=args, num_cpus=config.session.threads)


def worker_arguments(model: str | Path | LLMConfig, params: SamplingParams | dict | None, replicas: int,
                     model_name: str | None = None) -> dict:
    """Each actor's BatchWorker arguments: the config resolved, with its share of this machine's threads, and
    the caller's params as given."""
    given = model if isinstance(model, LLMConfig) else LLMConfig.of(model)
    if params is not None and not isinstance(params, (SamplingParams, dict)):
        raise TypeError(f"params must be SamplingParams or a dict of request fields, got {type(params).__name__}")
    return dict(config=given.per_replica(replicas).resolved(), model_name=model_name or served_name(given.model),
                params=params)
