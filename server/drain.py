"""Graceful drain: on SIGTERM or SIGINT the server keeps listening but takes no new work, lets the requests in
flight (streams to their `[DONE]`) finish within the shutdown timeout, then stops; a second signal exits at once.

Why more than uvicorn's own `timeout_graceful_shutdown`: on a signal uvicorn closes its listening socket at once, so
a load balancer's health check gets "connection refused", not a "draining" answer, and a new request gets no
`Retry-After`; and sse-starlette, seeing uvicorn's `should_exit`, ends every stream early. So the first signal only
marks the drain (`Drain`, read by `DrainGate`), and `should_exit` is set once nothing is in flight or the timeout
has passed; uvicorn's graceful shutdown then does the rest (closes idle keep-alive connections, cancels what is
left after the time remaining, runs the app's shutdown: the response store's flush)."""
from __future__ import annotations

import json
import logging
import os
import time

import uvicorn

from .errors import APIError

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5
HANDOVER_S = 1.0  # uvicorn's least time to close the connections once the drain is over


class Drain:
    """Whether the server is draining, and how many HTTP requests are in flight (changed on the event loop's
    thread only)."""

    def __init__(self):
        self.draining = False
        self.in_flight = 0


class DrainGate:
    """ASGI middleware: counts the HTTP requests in flight (a stream until its last event is sent); while
    draining, /health answers 503 `{"status": "draining"}` and any other new request 503 with Retry-After."""

    def __init__(self, app, drain: Drain):
        self.app, self.drain = app, drain

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.drain.draining:
            return await _refuse(scope["path"], send)
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1


async def _refuse(path: str, send) -> None:
    if path == "/health":
        body = json.dumps({"status": "draining"}).encode()
    else:
        body = json.dumps(APIError(503, "the server is shutting down", code="server_shutting_down").body()).encode()
    # `connection: close`: the client's next try opens a new connection, which a load balancer sends elsewhere
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", str(RETRY_AFTER_S).encode()),
                            (b"connection", b"close"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose first SIGTERM/SIGINT starts a drain of at most `shutdown_timeout` seconds; the
    process then exits 0. A second signal exits at once, with 128 + the signal's number (143 for SIGTERM, 130
    for SIGINT), as a shell reports a process killed by it; stored responses are safe (SQLite commits each one)."""

    def __init__(self, config: uvicorn.Config, drain: Drain, shutdown_timeout: float):
        super().__init__(config)
        self.drain, self.shutdown_timeout = drain, shutdown_timeout
        self.deadline = float("inf")

    def handle_exit(self, sig: int, frame) -> None:
        # Replaces uvicorn's handler (and sse-starlette's patch of it, which would end the streams now); not
        # recording the signal keeps uvicorn from raising it again once served, so a drained process exits 0.
        if self.drain.draining or self.should_exit:
            log.warning("second signal %d: exiting at once", sig)
            logging.shutdown()
            os._exit(128 + sig)
        self.drain.draining = True
        self.deadline = time.monotonic() + self.shutdown_timeout
        log.warning("draining: %d requests in flight, stopping within %g s (a second signal stops at once)",
                    self.drain.in_flight, self.shutdown_timeout)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s): once draining, exit when nothing is in flight or the time is up."""
        if self.drain.draining and not self.should_exit:
            left = self.deadline - time.monotonic()
            if self.drain.in_flight == 0 or left <= 0:
                if self.drain.in_flight:
                    log.warning("shutdown timeout: cutting %d requests still in flight", self.drain.in_flight)
                self.config.timeout_graceful_shutdown = max(left, HANDOVER_S)
                self.should_exit = True
        return await super().on_tick(counter)
