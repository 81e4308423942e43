"""`llm-runtime serve --model M`: the OpenAI-compatible HTTP API (listens at once; /health is 503 until loaded)."""
from __future__ import annotations

import logging
import os
import threading

from llm_runtime.commands.sampling_args import add_model_arguments

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=[],
                   help="accepted bearer key (repeatable; also $LLM_RUNTIME_API_KEY); none: no authentication")
    p.add_argument("--served-model-name", help="the model name clients send (default: the --model argument)")
    p.add_argument("--max-concurrency", type=int, default=16, help="sequences generated at once")
    p.add_argument("--max-waiting", type=int, default=256, help="queued requests beyond which requests get 429")
    p.add_argument("--cors-origin", action="append", default=[], help="allowed CORS origin (repeatable; none: off)")


def run(args) -> int:
    import uvicorn

    from llm_runtime.llm import LLM

    from .app import create_app

    if args.max_concurrency < 1 or args.max_waiting < 1 or not 0 <= args.port < 65536:
        raise ValueError("--max-concurrency and --max-waiting must be >= 1, --port in 0..65535")
    keys = args.api_key + ([os.environ["LLM_RUNTIME_API_KEY"]] if os.environ.get("LLM_RUNTIME_API_KEY") else [])
    app = create_app(None, args.served_model_name or args.model, keys, args.cors_origin)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    failed: list[BaseException] = []

    def load() -> None:
        try:
            llm = LLM(args.model, provider=args.provider, threads=args.threads, max_running=args.max_concurrency,
                      max_waiting=args.max_waiting)
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
