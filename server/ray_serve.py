"""The OpenAI-compatible server on Ray Serve: each replica an actor with its own LLM and engine, serving the
same FastAPI app as `llm-runtime serve` (server/app.py's create_app, through `@serve.ingress`).

Serve's router spreads requests over the replicas, at most `max_concurrency` in flight per replica and
`max_waiting` queued (then 503); Serve restarts a replica that dies or fails its health check. /metrics
answers from the replica that takes the request (per-replica counters).
"""
from __future__ import annotations

from pathlib import Path

from ray import serve

from llm_runtime.engine import EngineConfig
from llm_runtime.graph.providers import CAPABILITIES, resolve
from llm_runtime.llm import LLM
from llm_runtime.models.resolver import model_name, resolve_model

from .app import create_app

DEPLOYMENT = "llm-runtime"


@serve.ingress()
class LLMServer:
    """One replica: loads the model (Serve routes nothing to it before this returns), then serves the app."""

    def __init__(self, model: str, served_model_name: str, api_keys: list[str], cors_origins: list[str],
                 provider: str, threads: int, max_concurrency: int, max_waiting: int):
        self.llm = LLM(model, provider=provider, threads=threads,
                       engine=EngineConfig(max_concurrency=max_concurrency, max_waiting=max_waiting))
        self.app_args = (served_model_name, api_keys, cors_origins)

    def __serve_build_asgi_app__(self):
        return create_app(self.llm, *self.app_args)

    def check_health(self) -> None:
        """Serve's periodic health check: a failed engine makes Serve replace this replica."""
        if not self.llm.engine.stats().healthy:
            raise RuntimeError("the engine is unhealthy")


def parse_autoscale(text: str) -> tuple[int, int]:
    """"MIN:MAX" -> (min, max) replicas."""
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--autoscale takes MIN:MAX replicas (e.g. 1:4), got {text!r}") from None
    if not 0 <= lo <= hi or hi < 1:
        raise ValueError(f"--autoscale needs 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return lo, hi


def application(model: str | Path = "default", served_model_name: str | None = None, *, replicas: int = 1,
                autoscale: tuple[int, int] | None = None, threads: int = 1, max_concurrency: int = 16,
                max_waiting: int = 256, api_keys: list[str] = (), cors_origins: list[str] = (),
                provider: str = "cpu"):
    """The Serve application (for `serve.run`): `replicas` fixed replicas, or `autoscale` (min, max) replicas
    scaled on requests in flight. The model is resolved (built on first use) here; its folder must be readable
    at the same path on every node."""
    if replicas < 1 or threads < 1 or max_concurrency < 1 or max_waiting < 1:
        raise ValueError("replicas, threads, max_concurrency and max_waiting must be >= 1")
    folder = resolve_model(model, CAPABILITIES[resolve(provider)].build_provider)
    scaling = ({"autoscaling_config": {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                                       "target_ongoing_requests": max(1, max_concurrency // 2)}}
               if autoscale else {"num_replicas": replicas})
    deployment = serve.deployment(LLMServer, name=DEPLOYMENT, ray_actor_options={"num_cpus": threads},
                                  max_ongoing_requests=max_concurrency, max_queued_requests=max_waiting, **scaling)
    return deployment.bind(str(folder), served_model_name or model_name(model), list(api_keys), list(cors_origins),
                           provider, threads, max_concurrency, max_waiting)
