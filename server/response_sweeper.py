"""Sweeps the stored responses (server/response_store.py) on a thread of its own: at start, then every
`every_s`. A sweep of a large file, or one waiting for another writer's lock (up to the store's LOCK_WAIT_S),
never holds up the event loop."""
from __future__ import annotations

import logging
import sqlite3
import threading

from .response_store import ResponseStore

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 60.0


class ResponseSweeper:
    """Runs `store.sweep()` (expired rows, then the oldest past the size cap) until stopped."""

    def __init__(self, store: ResponseStore, every_s: float = SWEEP_EVERY_S):
        self.store, self.every_s = store, every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="response-sweeper", daemon=True)
        self._thread.start()

    def stop(self, wait_s: float = 10.0) -> None:
        """Stop after the sweep under way, if any (waiting for it at most `wait_s`: a transaction cut by the
        process's exit is rolled back, never half done)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=wait_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                expired, evicted = self.store.sweep()
                if expired or evicted:
                    log.info("stored responses: %d expired, %d deleted over the size cap", expired, evicted)
            except sqlite3.Error as e:  # a lock held too long, a full disk: the next sweep tries again
                log.warning("sweeping the stored responses failed: %s", e)
            self._stop.wait(self.every_s)
