"""The engine: one background thread runs schedule -> run -> postprocess over the shared cache."""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from llm_runtime.kv_cache import KVCache

from ..completion import Chunk, TokenLogprob
from ..output_stream import OutputStream
from ..prompt_check import check_prompt
from ..request_sampler import RequestSampler
from ..runner import ModelRunner, Step
from ..sampling_params import SamplingParams
from ..speculation import SpeculationConfig
from .handle import RequestHandle
from .scheduler import QueueFullError, Scheduled, Scheduler
from .sequence import Sequence
from .speculator import Speculator

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """A step failed inside the engine; the affected requests end with this error."""


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    cache_bytes: int
    cache_used_tokens: int
    steps: int
    generated_tokens: int
    prompt_tokens: int  # computed by the graph
    reused_prompt_tokens: int  # copied from another sequence's cache (a shared prompt prefix)
    healthy: bool
    draft_tokens: int = 0  # speculation: drafted tokens verified
    accepted_tokens: int = 0  # of those, accepted
    verifications: int = 0  # verified runs (rows that drafted, per step)


class Engine:
    """Thread-safe: `submit` from any thread; the loop runs in one background thread."""

    def __init__(self, runner: ModelRunner, cache: KVCache, max_running: int = 16, max_waiting: int = 1024,
                 token_budget: int = 256, chunk_size: int = 128, lock: threading.Lock | None = None,
                 speculation: SpeculationConfig | None = None):
        self.runner, self.cache = runner, cache
        self.speculator = Speculator(speculation, cache) if speculation else None
        self.folder = runner.folder
        self.scheduler = Scheduler(cache, max_running, max_waiting, token_budget, chunk_size)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._lock = lock or threading.Lock()
        self._sequences: dict[int, Sequence] = {}
        self._stop = False
        self.steps = self.generated = self.prompt_tokens = 0
        self.healthy = True
        self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
        self._thread.start()

    def submit(self, prompt_ids: list[int], params: SamplingParams, loop=None) -> RequestHandle:
        """Queue a request; raises ParameterError for bad input and QueueFullError when the queue is full."""
        return self.submit_all([prompt_ids], params, loop)[0]

    def submit_all(self, prompts: list[list[int]], params: SamplingParams, loop=None) -> list[RequestHandle]:
        """Queue several requests at once: the same step sees them all (all or none are queued)."""
        seqs = [self._sequence(ids, params, loop) for ids in prompts]
        with self._lock:
            if len(self.scheduler.waiting) + len(seqs) > self.scheduler.max_waiting:
                raise QueueFullError(f"the waiting queue is full ({self.scheduler.max_waiting} requests)")
            for seq in seqs:
                self.scheduler.add(seq)
                self._sequences[seq.id] = seq
        self._wake.set()
        return [seq.handle for seq in seqs]

    def _sequence(self, prompt_ids: list[int], params: SamplingParams, loop) -> Sequence:
        params = check_prompt(prompt_ids, params, self.folder.context_length, self.folder.vocab_size)
        eos = self.folder.eos_token_ids
        seq = Sequence(list(prompt_ids), params)
        seq.out = OutputStream(self.folder.tokenizer, seq.prompt_ids, params, eos)
        seq.sampler = RequestSampler(params, seq.prompt_ids, eos, seq.out.token_text)
        seq.handle = RequestHandle(self, seq.id, loop, params.logprobs)
        if self.speculator is not None:
            self.speculator.attach(seq)
        return seq

    def cancel(self, seq_id: int) -> None:
        self._inbox.put(seq_id)
        self._wake.set()

    def stats(self) -> EngineStats:
        s = self.scheduler
        sp = self.speculator
        return EngineStats(len(s.running), len(s.waiting), self.cache.nbytes, int(self.cache.lengths.sum()),
                           self.steps, self.generated, self.prompt_tokens, s.reused_tokens, self.healthy,
                           *((sp.drafted, sp.accepted, sp.verifications) if sp else ()))

    def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException:  # a dead loop must not look healthy: /health turns 503, waiting callers are told
            log.exception("engine loop died")
            self.healthy = False
            for seq in list(self._sequences.values()):
                seq.handle.put(EngineError("the engine stopped"))
                seq.handle.close()
            raise

    def _serve(self) -> None:
        while not self._stop:
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            while not self._stop:
                with self._lock:
                    self._take_cancellations()
                    if self.scheduler.idle:
                        break
                    self._step()

    def _take_cancellations(self) -> None:
        while not self._inbox.empty():
            seq = self._sequences.get(self._inbox.get())
            if seq is not None:
                self._finish(seq, seq.out.cancel())

    def _step(self) -> None:
        plan = self.scheduler.schedule()
        if self.speculator is not None:
            plan = self.speculator.draft(plan, self.scheduler.token_budget - sum(len(item.tokens) for item in plan))
        if not plan:
            time.sleep(0.001)  # waiting requests that do not fit yet
            return
        for call in group_calls(plan, padded=self.runner.has_query_seqlens):
            self._run(call)
        self.steps += 1

    def _run(self, call: list[Scheduled]) -> None:
        """One graph call, then each of its sequences advances and, where its logits were computed, samples."""
        try:
            logits = self.runner.run(build_step(call, self.cache), self.cache)
        except Exception as e:  # the engine outlives a failed call; its requests end with the error
            log.exception("engine step failed")
            for item in call:
                self._finish(item.seq, EngineError(f"generation failed: {e}"))
            return
        at = 0  # logits: one row per sampling item, every position of a verified run
        for item in call:
            seq, rows = item.seq, logits[at:at + item.logit_rows]
            at += item.logit_rows
            if seq.out.generated == 0:
                self.prompt_tokens += len(item.tokens)
            if not item.draft:
                seq.cached += len(item.tokens)
            if len(rows):
                try:
                    self._emit(seq, self.speculator.accept(item, rows, seq.sampler.pick) if item.draft
                               else [seq.sampler.pick(rows[0])])
                except Exception as e:  # one request's sampling failure ends that request, not the engine
                    log.exception("request %d failed", seq.id)
                    self._finish(seq, EngineError(f"generation failed: {e}"))

    def _emit(self, seq: Sequence, picks: list[tuple[int, TokenLogprob | None]]) -> None:
        """Stream picked tokens as one chunk, up to the one that ends the request (EOS, a stop string, max_tokens
        inside a verified run: the rest is dropped)."""
        chunks = []
        for token, logprob in picks:
            self.generated += 1
            chunks.append(seq.out.add(token, logprob))
            if seq.out.finished:
                break
        seq.next_token = token
        if seq.proposer is not None:
            seq.proposer.extend(t for c in chunks for t in c.token_ids)
        chunk = Chunk.join(chunks)
        if seq.out.finished:
            self._finish(seq, chunk)
        else:
            seq.handle.put(chunk)

    def _finish(self, seq: Sequence, last) -> None:
        self.scheduler.finish(seq)
        self._sequences.pop(seq.id, None)
        seq.handle.put(last)
        seq.handle.close()


def padded_tokens(items: list[Scheduled]) -> int:
    """Token rows one right-padded call over these items computes: every slot in their range times the widest."""
    slots = [item.seq.slot for item in items]
    return (max(slots) - min(slots) + 1) * max(len(item.tokens) for item in items)


def group_calls(plan: list[Scheduled], padded: bool = True) -> list[list[Scheduled]]:
    """A step's graph calls. The decodes share a one-token call: GroupQueryAttention's one-token path, the one
    a sequence takes alone (right-padding them to a chunk's width would multiply their work and change their
    numerics). The prompt chunks share one right-padded call while padding costs no more than the work itself,
    else they go one call each; so do the verified runs of speculating rows (last token plus drafts), in calls of
    their own. A graph without query_seqlens (`padded` False: onnxruntime-genai's builder, onnxruntime < 1.32)
    takes neither idle nor padded rows: decodes go in runs of consecutive slots, each run and chunk alone."""
    decodes = sorted((item for item in plan if item.decode and not item.draft), key=lambda item: item.seq.slot)
    verified = sorted((item for item in plan if item.draft), key=lambda item: item.seq.slot)
    chunks = [item for item in plan if not item.decode]
    if not padded:
        runs: list[list[Scheduled]] = []
        for item in decodes:
            if runs and runs[-1][-1].seq.slot + 1 == item.seq.slot:
                runs[-1].append(item)
            else:
                runs.append([item])
        return runs + [[v] for v in verified] + [[c] for c in chunks]
    calls = [decodes] if decodes else []
    for multi in (verified, chunks):
        if multi:
            calls += [multi] if padded_tokens(multi) <= 2 * sum(len(c.tokens) for c in multi) else [[c] for c in multi]
    return calls


def build_step(items: list[Scheduled], cache: KVCache) -> Step:
    """Right-pad the items into one call over the slots they span; idle slots in between get Q = 0."""
    first = min(item.seq.slot for item in items)
    rows = max(item.seq.slot for item in items) - first + 1
    width = max(len(item.tokens) for item in items)
    ids = np.zeros((rows, width), np.int64)  # [rows, S]
    totals = np.maximum(cache.lengths[first:first + rows], 1)  # idle rows keep their length (at least 1, the op's rule)
    query = np.zeros(rows, np.int64)
    logits_at = []
    for item in items:
        row, n = item.seq.slot - first, len(item.tokens)
        ids[row, :n] = item.tokens
        totals[row] = item.seq.cached + n
        query[row] = n
        if item.draft:  # every position of a verified run
            logits_at.extend(range(row * width, row * width + n))
        elif item.wants_logits:
            logits_at.append(row * width + n - 1)
    return Step(ids, totals, query, np.array(logits_at, np.int64), first)
