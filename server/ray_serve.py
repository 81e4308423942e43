"""The OpenAI-compatible server on Ray Serve: each replica an actor with its own LLM and engine, serving the
same FastAPI app as `llm-runtime serve` (server/app.py's create_app, through `@serve.ingress`).

Serve's router spreads requests over the replicas, at most `max_concurrency` in flight per replica and
`max_waiting` queued (then 503); Serve restarts a replica that dies or fails its health check. /metrics
answers from the replica that takes the request (per-replica counters).
"""
from __future__ import annotations

from pathlib import Path

from ray import serve

from llm_runtime.llm import LLM
from llm_runtime.llm_config import LLMConfig
from llm_runtime.models.resolver import model_name

from .app import create_app

DEPLOYMENT = "llm-runtime"


@serve.ingress()
class LLMServer:
    """One replica: loads the model (Serve routes nothing to it before this returns), then serves the app."""

    def __init__(self, config: LLMConfig, served_model_name: str, api_keys: list[str], cors_origins: list[str]):
        self.llm = LLM(config)
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


def application(model: str | Path | LLMConfig = "default", served_model_name: str | None = None, *,
                replicas: int = 1, autoscale: tuple[int, int] | None = None, api_keys: list[str] = (),
                cors_origins: list[str] = ()):
    """The Serve application (for `serve.run`): `replicas` fixed replicas, or `autoscale` (min, max) replicas
    scaled on requests in flight. `model` is a model, or the LLMConfig each replica loads (threads 0: this
    machine's cores divided among `replicas`). The model is resolved (built on first use) here; its folder must
    be readable at the same path on every node."""
    given = model if isinstance(model, LLMConfig) else LLMConfig.of(model)
    config = given.per_replica(replicas).resolved()
    engine = config.engine
    scaling = ({"autoscaling_config": {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                                       "target_ongoing_requests": max(1, engine.max_concurrency // 2)}}
               if autoscale else {"num_replicas": replicas})
    deployment = serve.deployment(LLMServer, name=DEPLOYMENT, ray_actor_options={"num_cpus": config.session.threads},
                                  max_ongoing_requests=engine.max_concurrency,
                                  max_queued_requests=engine.max_waiting, **scaling)
    return deployment.bind(config, served_model_name or model_name(given.model), list(api_keys), list(cors_origins))
