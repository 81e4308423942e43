"""`llm-runtime serve --model M`: the OpenAI-compatible HTTP API."""
from __future__ import annotations

import os

from .sampling_args import add_model_arguments

HELP = "serve an OpenAI-compatible API (chat and completions, streaming) on the batching engine"


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=[], help="accepted bearer key (repeatable); "
                                                                   "also LLM_RUNTIME_API_KEY")
    p.add_argument("--served-model-name", help="the model name clients send (default: the folder's name)")
    p.add_argument("--max-concurrency", type=int, default=16, help="sequences generated at once")
    p.add_argument("--max-waiting", type=int, default=256, help="queued requests before 429")
    p.add_argument("--cors-origin", action="append", default=[], help="allowed CORS origin (repeatable)")


def run(args) -> int:
    import uvicorn

    from server.app import create_app

    from ..llm import LLM

    keys = args.api_key + ([os.environ["LLM_RUNTIME_API_KEY"]] if os.environ.get("LLM_RUNTIME_API_KEY") else [])
    llm = LLM(args.model, provider=args.provider, threads=args.threads, max_running=args.max_concurrency,
              max_waiting=args.max_waiting)
    llm.engine  # start the engine before accepting requests
    name = args.served_model_name or ("default" if args.model == "default" else llm.folder.path.name)
    app = create_app(llm, name, keys, args.cors_origin)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
