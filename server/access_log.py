"""One INFO line per HTTP request once its response has ended, as uvicorn writes them, with the time taken:
`127.0.0.1:50312 - "POST /v1/chat/completions HTTP/1.1" 200 412 ms` (a stream's time is the whole stream's)."""
from __future__ import annotations

import logging
import time

log = logging.getLogger("llm_runtime.server.access")


class AccessLog:
    """ASGI middleware: the access line of every HTTP request, the outermost layer so that refusals (401, 413,
    CORS preflights) are logged too. A request that ends before any response (the client left) logs `-`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, send = time.perf_counter(), StatusRecorder(send)
        try:
            await self.app(scope, receive, send)
        finally:
            log.info('%s - "%s %s HTTP/%s" %s %.0f ms', client(scope), scope["method"], target(scope),
                     scope.get("http_version", "1.1"), send.status or "-", (time.perf_counter() - start) * 1000)


class StatusRecorder:
    """An ASGI `send` that passes every message on and remembers the response's status (None until it starts)."""

    def __init__(self, send):
        self.send, self.status = send, None

    async def __call__(self, message):
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


def client(scope) -> str:
    """`host:port` of the peer, `-` when the server does not know it."""
    peer = scope.get("client")
    return f"{peer[0]}:{peer[1]}" if peer else "-"


def target(scope) -> str:
    """The path with its query string, as the request line had it."""
    path, query = scope.get("root_path", "") + scope["path"], scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path
