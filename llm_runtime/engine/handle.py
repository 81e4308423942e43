"""The caller's side of a request: iterate its chunks (sync or async), cancel it, or wait for the result."""
from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterator

from llm_runtime.completion import Chunk, Completion

_END = object()


class _LoopMailbox:
    """Hands items from the engine thread to one event loop, coalescing wakeups: one per burst, not per item."""

    _by_loop: dict = {}
    _lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.pending, self.scheduled = loop, [], False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> "_LoopMailbox":
        with cls._lock:
            box = cls._by_loop.get(loop)
            if box is None:
                box = cls._by_loop[loop] = cls(loop)
            return box

    def post(self, q: asyncio.Queue, item) -> None:
        with self._lock:
            self.pending.append((q, item))
            if self.scheduled:
                return
            self.scheduled = True
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items, self.pending, self.scheduled = self.pending, [], False
        for q, item in items:
            q.put_nowait(item)


class RequestHandle:
    """Chunks arrive from the engine thread; a finished stream ends with the chunk carrying finish_reason."""

    def __init__(self, engine, seq_id: int, loop: asyncio.AbstractEventLoop | None = None, want_logprobs: bool = False):
        self._engine, self.id = engine, seq_id
        self._mailbox = _LoopMailbox.of(loop) if loop else None
        self._queue: queue.SimpleQueue | asyncio.Queue = asyncio.Queue() if loop else queue.SimpleQueue()
        self.want_logprobs = want_logprobs
        self.inline = False  # the reading thread steps the engine itself while the background thread does not
        self.done = False
        self.cancelled = False

    # called from the engine thread
    def put(self, item: Chunk | BaseException) -> None:
        if self._mailbox is not None:
            self._mailbox.post(self._queue, item)
        else:
            self._queue.put(item)

    def close(self) -> None:
        self.put(_END)

    def cancel(self) -> None:
        """Stop generating; the slot is freed by the engine at its next step."""
        if not self.done:
            self.cancelled = True
            self._engine.cancel(self.id)

    def _next(self):
        """The next item; an inline reader steps the engine until one is there or the background thread drives."""
        while self.inline:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            if not self._engine.step_inline():
                self.inline = False
        return self._queue.get()

    def __iter__(self) -> Iterator[Chunk]:
        try:
            while (item := self._next()) is not _END:
                if isinstance(item, BaseException):
                    self.done = True
                    raise item
                yield item
        except GeneratorExit:  # the caller stopped reading: stop generating and free the slot
            self.cancel()
            raise
        self.done = True

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        """Chunks as they come; the chunks that queued up while the reader was busy arrive joined as one."""
        try:
            while True:
                items = [await self._queue.get()]
                while not self._queue.empty() and isinstance(items[-1], Chunk):
                    items.append(self._queue.get_nowait())
                chunks = [c for c in items if isinstance(c, Chunk)]
                if chunks:
                    yield Chunk.join(chunks)
                if items[-1] is _END:
                    break
                if isinstance(items[-1], BaseException):
                    self.done = True
                    raise items[-1]
        except (GeneratorExit, asyncio.CancelledError):
            self.cancel()
            raise
        self.done = True

    def result(self) -> Completion:
        return Completion.fold(self, self.want_logprobs)
