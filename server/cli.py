"""`llm-runtime serve --model M`: the OpenAI-compatible HTTP API (listens at once; /health is 503 until loaded)."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from llm_runtime.commands.sampling_args import add_model_arguments

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=[],
                   help="accepted bearer key (repeatable; also $LLM_RUNTIME_API_KEY); none: no authentication")
    p.add_argument("--served-model-name",
                   help="the model name clients send (default: 'default', or the model folder's name)")
    p.add_argument("--max-concurrency", type=int, default=16, help="sequences generated at once")
    p.add_argument("--max-waiting", type=int, default=256, help="queued requests beyond which requests get 429")
    p.add_argument("--cors-origin", action="append", default=[], help="allowed CORS origin (repeatable; none: off)")
    p.add_argument("--public-metrics", action="store_true", help="serve /metrics without the API key")
    p.add_argument("--no-web-ui", action="store_true", help="do not serve the chat page at /")
    p.add_argument("--data-dir", help="where stored responses (/v1/responses) live "
                                      "(default: $LLM_RUNTIME_HOME/server, or ~/.cache/llm-runtime/server)")
    ray = p.add_argument_group("Ray Serve (the ray extra): replicas of the same server")
    ray.add_argument("--ray", action="store_true", help="serve through Ray Serve, one engine per replica")
    ray.add_argument("--address", help="the cluster: auto, ray://HOST:10001 (default: a local cluster)")
    ray.add_argument("--replicas", type=int, default=1, help="replicas (default 1)")
    ray.add_argument("--autoscale", metavar="MIN:MAX", help="scale between MIN and MAX replicas on load")


def run(args) -> int:
    if args.ray:
        return run_on_ray(args)
    import uvicorn

    from llm_runtime.engine import EngineConfig
    from llm_runtime.llm import LLM
    from llm_runtime.model_resolver import model_name

    from .app import create_app, default_data_dir

    if args.max_concurrency < 1 or args.max_waiting < 1 or not 0 <= args.port < 65536:
        raise ValueError("--max-concurrency and --max-waiting must be >= 1, --port in 0..65535")
    keys = args.api_key + ([os.environ["LLM_RUNTIME_API_KEY"]] if os.environ.get("LLM_RUNTIME_API_KEY") else [])
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--data-dir {data_dir}: {e.strerror}") from None
    app = create_app(None, args.served_model_name or model_name(args.model), keys, args.cors_origin,
                     args.public_metrics, web=not args.no_web_ui, data_dir=data_dir)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    failed: list[BaseException] = []

    def load() -> None:
        try:
            llm = LLM(args.model, provider=args.provider, threads=args.threads,
                      engine=EngineConfig(max_concurrency=args.max_concurrency, max_waiting=args.max_waiting),
                      speculation=args.speculation, num_speculative_tokens=args.num_speculative_tokens)
            llm.engine  # started before the first request
            app.state.llm = llm
            log.warning("serving %s at http://%s:%d/v1", args.model, args.host, args.port)
        except BaseException as e:  # reported by run() once the server has stopped
            failed.append(e)
            server.should_exit = True

    threading.Thread(target=load, name="model-loader", daemon=True).start()
    server.run()
    if failed:
        raise failed[0]
    return 0


def run_on_ray(args) -> int:
    """`--ray`: the app on Ray Serve (llm_runtime.ray.serve) until Ctrl-C."""
    from llm_runtime.ray import serve as ray_serve

    if args.replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {args.replicas}")
    autoscale = ray_serve.parse_autoscale(args.autoscale) if args.autoscale else None
    keys = args.api_key + ([os.environ["LLM_RUNTIME_API_KEY"]] if os.environ.get("LLM_RUNTIME_API_KEY") else [])
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.replicas)
    app = ray_serve.application(args.model, args.served_model_name, replicas=args.replicas, autoscale=autoscale,
                                threads=threads, max_concurrency=args.max_concurrency,
                                max_waiting=args.max_waiting, api_keys=keys, cors_origins=args.cors_origin,
                                provider=args.provider)
    import ray
    from ray import serve

    ray.init(address=args.address)
    serve.start(http_options={"host": args.host, "port": args.port})
    log.warning("serving %s on Ray Serve at http://%s:%d/v1", args.model, args.host, args.port)
    try:
        serve.run(app, name=ray_serve.DEPLOYMENT, route_prefix="/", blocking=True)
    finally:
        serve.shutdown()
    return 0
