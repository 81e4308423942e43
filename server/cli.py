"""`llm-runtime serve --model M [--model M2 ...] [--max-loaded N]`: the OpenAI-compatible HTTP API (listens at once;
/health is 503 until the models are loaded, or with --max-loaded, each model loads on its first request)."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from llm_runtime.cli.llm_args import add_llm_arguments, llm_config

from . import retention

log = logging.getLogger(__name__)
DESCRIPTION = """\
Serve an OpenAI-compatible HTTP API on the batching engine, and a chat page:
  POST /v1/chat/completions  chat ("stream": true streams; tools, JSON schemas)
  POST /v1/completions       text completion
  POST /v1/responses         the Responses API (GET, DELETE /v1/responses/ID; DELETE /v1/responses: all of a key's)
  GET  /v1/models            the served models and their LoRA adapters (--lora NAME=PATH: `model: NAME`)
  POST /v1/load_lora_adapter, /v1/unload_lora_adapter  with --allow-adapter-updates
  GET  /                     the chat page, in a browser (off: --no-web-ui)
  GET  /metrics              Prometheus metrics (API key unless --public-metrics)
  GET  /health               200 once the models are loaded, 503 until then (and while draining)
Logs the URLs at start and a line per request (off: --no-access-log);
`llm-runtime -v serve` adds the runtime's own lines. SIGTERM or Ctrl-C drains: in-flight requests finish
(--shutdown-timeout), new ones get 503; a second signal stops at once."""


def add_arguments(p) -> None:
    p.description = DESCRIPTION
    add_llm_arguments(p, several=True)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s, loopback only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    p.add_argument("--api-key", action="append", default=[],
                   help="accepted bearer key (repeatable; also $LLM_RUNTIME_API_KEY); none: no authentication")
    p.add_argument("--served-model-name", action="append",
                   help="the model name clients send (default: 'default', or the model folder's name); with several "
                        "--model, one each, in the same order")
    p.add_argument("--max-loaded", type=int, help="models loaded at once: each loads on its first request and the "
                                                  "least recently used idle one is unloaded (default: all, at start)")
    p.add_argument("--allow-adapter-updates", action="store_true",
                   help="serve POST /v1/load_lora_adapter and /v1/unload_lora_adapter (behind the API key; implies "
                        "--enable-lora)")
    p.add_argument("--cors-origin", action="append", default=[], help="allowed CORS origin (repeatable; none: off)")
    p.add_argument("--public-metrics", action="store_true", help="serve /metrics without the API key")
    p.add_argument("--no-web-ui", action="store_true", help="do not serve the chat page at /")
    p.add_argument("--no-access-log", action="store_true",
                   help="do not log a line per request (the start lines, warnings and errors stay; "
                        "Ray Serve keeps its own request log)")
    p.add_argument("--data-dir", help="where stored responses (/v1/responses) live "
                                      "(default: $LLM_RUNTIME_HOME/server, or ~/.cache/llm-runtime/server)")
    retention.add_arguments(p)
    p.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, how long requests in flight may take to finish before they are cut "
                        "(default: %(default)g)")
    p.add_argument("--generation-config", default="auto", metavar="auto|none|FILE",
                   help="the sampling a request that leaves a field out gets: auto, the model's recommended settings "
                        "(its generation_config.json); none, the documented defaults (temperature 1.0); or a JSON "
                        "file of fields (default: %(default)s)")
    p.add_argument("--override-generation-config", metavar="JSON",
                   help="fields that win over --generation-config, e.g. '{\"temperature\": 0.5}'")
    ray = p.add_argument_group("Ray Serve (the ray extra): replicas of the same server")
    ray.add_argument("--ray", action="store_true", help="serve through Ray Serve, one engine per replica")
    ray.add_argument("--address", help="the cluster: auto, ray://HOST:10001 (default: a local cluster)")
    ray.add_argument("--replicas", type=int, default=1, help="replicas (default: %(default)s)")
    ray.add_argument("--autoscale", metavar="MIN:MAX", help="scale between MIN and MAX replicas on load")


def served_names(models: list[str], names: list[str] | None) -> list[str]:
    """The name each model is served as: --served-model-name (one per --model), else its model_name()."""
    from llm_runtime.models.resolver import model_name

    if names and len(names) != len(models):
        raise ValueError(f"give one --served-model-name per --model ({len(models)} models, {len(names)} names)")
    names = names or [model_name(m) for m in models]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"two models are served as {twice[0]!r}: give each --model its own --served-model-name")
    return names


def run(args) -> int:
    # A server's log is how a person watches it (uvicorn and vLLM log at INFO by default): its INFO lines (the
    # URLs, the access log) show without -v, while the runtime's own (builds, providers) stay behind -v.
    logging.getLogger("llm_runtime.server").setLevel(logging.INFO)
    if args.ray:
        return run_on_ray(args)
    import uvicorn

    from llm_runtime.llm import LLM
    from llm_runtime.model_builder.recommended_sampling import folder_sampling
    from llm_runtime.openai.generation_config import GenerationConfig

    from .app import create_app, default_data_dir
    from .drain import DrainingServer
    from .models import Model, ModelRegistry, adapter_roots

    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.shutdown_timeout < 0:
        raise ValueError(f"--shutdown-timeout must be >= 0, got {args.shutdown_timeout}")
    sources = args.model or ["default"]
    if args.lora and len(sources) > 1:
        raise ValueError("--lora serves adapters of one model: give one --model with it")
    args.enable_lora = args.enable_lora or args.allow_adapter_updates or None
    configs = [llm_config(args, source) for source in sources]
    names = served_names(sources, args.served_model_name)
    generation = GenerationConfig.of(args.generation_config, args.override_generation_config)
    keys = args.api_key + ([os.environ["LLM_RUNTIME_API_KEY"]] if os.environ.get("LLM_RUNTIME_API_KEY") else [])
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--data-dir {data_dir}: {e.strerror}") from None

    def loader(config):
        def load() -> LLM:
            llm = LLM(config)
            llm.engine  # started before the first request
            return llm
        return load

    lazy = args.max_loaded is not None
    registry = ModelRegistry([Model(n, loader(c) if lazy else None, generation=generation,
                                    adapters=adapter_roots(c)) for n, c in zip(names, configs)], args.max_loaded)
    app = create_app(registry, None, keys, args.cors_origin, args.public_metrics, web=not args.no_web_ui,
                     data_dir=data_dir, access_log=not args.no_access_log, retention=retention.retention(args),
                     adapter_updates=args.allow_adapter_updates)
    # uvicorn's own start lines and access log are off: ours name the API and the chat page, and time requests
    server = DrainingServer(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=args.shutdown_timeout),
                            app.state.drain, args.shutdown_timeout)
    failed: list[BaseException] = []

    def prepare() -> None:
        """Without --max-loaded, load every model; with it, resolve (build on first use) each source now, so a
        bad one fails at start."""
        try:
            for name, config in zip(names, configs):
                if lazy:
                    registry.models[name].recommended = folder_sampling(config.resolved().model)
                else:
                    registry.models[name].llm = loader(config)()
            base = f"http://{f'[{args.host}]' if ':' in args.host else args.host}:{args.port}"
            log.info("serving %s: the API at %s/v1", ", ".join(names), base)
            if not args.no_web_ui:
                log.info("the chat page at %s/", base)
        except BaseException as e:  # reported by run() once the server has stopped
            failed.append(e)
            server.should_exit = True

    threading.Thread(target=prepare, name="model-loader", daemon=True).start()
    server.run()
    registry.shutdown()
    if failed:
        raise failed[0]
    return 0


def run_on_ray(args) -> int:
    """`--ray`: the app on Ray Serve (llm_runtime.server.ray_serve) until Ctrl-C."""
    import llm_runtime.ray  # noqa: F401  (without Ray: RayMissingError, which says how to install it)
    from llm_runtime.server import ray_serve

    if args.replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {args.replicas}")
    if len(args.model or ()) > 1 or args.max_loaded is not None:
        raise ValueError("--ray serves one model (replicas of it): several --model and --max-loaded are not "
                         "supported with --ray")
    if args.allow_adapter_updates:
        raise ValueError("--allow-adapter-updates is not supported with --ray (a load would reach one replica): "
                         "give the adapters with --lora, which every replica loads")
    if args.generation_config != "auto" or args.override_generation_config:
        raise ValueError("--generation-config and --override-generation-config are not supported with --ray (its "
                         "replicas sample with the model's recommended settings)")
    autoscale = ray_serve.parse_autoscale(args.autoscale) if args.autoscale else None
    keys = args.api_key + ([os.environ["LLM_RUNTIME_API_KEY"]] if os.environ.get("LLM_RUNTIME_API_KEY") else [])
    config, name = llm_config(args), (args.served_model_name or [None])[0]
    app = ray_serve.application(config, name, replicas=args.replicas, autoscale=autoscale, api_keys=keys,
                                cors_origins=args.cors_origin)
    import ray
    from ray import serve

    ray.init(address=args.address)
    serve.start(http_options={"host": args.host, "port": args.port})
    log.warning("serving %s on Ray Serve at http://%s:%d/v1", config.model, args.host, args.port)
    try:
        serve.run(app, name=ray_serve.DEPLOYMENT, route_prefix="/", blocking=True)
    finally:
        serve.shutdown()
    return 0
