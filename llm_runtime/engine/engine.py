"""The engine: `step()` schedules, runs the graph, samples and post-processes, over one shared KV cache.

Exactly one thread steps at a time, under the engine's lock. A request submitted `inline` while nothing else runs
is driven by its caller's thread (`LLM.generate / stream / chat`: no thread hop per token); any other submission
(the server, `LLM.submit`, a second request while one runs) switches the engine to its background thread, which
then steps for everyone until the engine is idle again, while inline callers wait on their handles."""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from llm_runtime.adapters.registry import BASE, AdapterPin, AdapterSlotsFullError, UnknownAdapterError
from llm_runtime.completion import Chunk, TokenLogprob
from llm_runtime.errors import ParameterError
from llm_runtime.graph.runner import ModelRunner
from llm_runtime.kv_cache import CacheFullError, KVCache, round_up
from llm_runtime.sampling.params import SamplingParams
from llm_runtime.sampling.request_sampler import RequestSampler
from llm_runtime.speculation import SpeculationConfig
from llm_runtime.structured.constrained_rows import CallMasks, ConstrainedRows
from llm_runtime.structured.token_mask import apply_mask

from .config import EngineConfig
from .handle import RequestHandle
from .output_stream import OutputStream
from .prompt_check import check_prompt
from .scheduler import QueueFullError, Scheduled, Scheduler
from .sequence import Sequence
from .speculator import Speculator
from .step_inputs import DecodeInputs, build_step, group_calls

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
    draft_sources: tuple[tuple[str, int, int], ...] = ()  # (source, drafted, accepted) for each draft source
    suffix_cache_bytes: int = 0  # the suffix cache's accounted memory (method "suffix")
    suffix_cache_sequences: int = 0  # replies it holds


class Engine:
    """Thread-safe: `submit` from any thread; `step` runs on one thread at a time."""

    def __init__(self, runner: ModelRunner, cache: KVCache, config: EngineConfig | None = None,
                 speculation: SpeculationConfig | None = None):
        self.runner, self.cache = runner, cache
        self.config = config or EngineConfig()
        self.speculator = Speculator(speculation, cache)  # speculation None: only requests' predictions draft
        self.folder = runner.folder
        self.constraints = ConstrainedRows(self.folder)  # structured output: grammar states and masks
        self.scheduler = Scheduler(cache, self.config)
        self._decode = DecodeInputs()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()  # ids of cancelled sequences
        self._wake = threading.Event()
        self._lock = threading.Lock()  # held by the stepping thread, and to change the queues or the driver
        self._sequences: dict[int, Sequence] = {}
        self._background = False  # the background thread drives; else the inline caller (or nobody: idle)
        self._thread: threading.Thread | None = None
        self._stop = False
        self.steps = self.generated = self.prompt_tokens = 0
        self.healthy = True

    # ---- requests in ------------------------------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, loop=None, key: str = "") -> RequestHandle:
        """Queue a request for the background thread; raises ParameterError for bad input, CacheFullError when it
        cannot fit the cache's cap, QueueFullError when the queue is full. `key`: the id (a hash) of the API key
        it came with, which the suffix cache's "key" mode partitions by."""
        return self.submit_all([prompt_ids], params, loop, key=key)[0]

    def submit_all(self, prompts: list[list[int]], params: SamplingParams, loop=None,
                   inline: bool = False, key: str = "") -> list[RequestHandle]:
        """Queue several requests at once: the same step sees them all (all or none are queued). `inline`: the
        caller's thread will iterate the handles; it steps the engine itself while nothing else runs."""
        seqs: list[Sequence] = []
        try:
            for ids in prompts:
                seqs.append(self._sequence(ids, params, loop, key))
        except BaseException:
            for seq in seqs:
                self._release(seq)
            raise
        with self._lock:
            if len(self.scheduler.waiting) + len(seqs) > self.scheduler.max_waiting:
                for seq in seqs:
                    self._release(seq)
                raise QueueFullError(f"the waiting queue is full ({self.scheduler.max_waiting} requests)")
            inline = inline and loop is None and not self._background and self.scheduler.idle
            for seq in seqs:
                self.scheduler.add(seq)
                self._sequences[seq.id] = seq
                seq.handle.inline = inline
            if not inline:
                self._drive_in_background()
        return [seq.handle for seq in seqs]

    def _sequence(self, prompt_ids: list[int], params: SamplingParams, loop, key: str) -> Sequence:
        params = check_prompt(prompt_ids, params, self.folder.context_length, self.folder.vocab_size)
        self._check_fits(len(prompt_ids) + params.max_tokens)
        eos = self.folder.eos_token_ids
        seq = Sequence(list(prompt_ids), params)
        seq.out = OutputStream(self.folder.tokenizer, seq.prompt_ids, params, eos)
        seq.sampler = RequestSampler(params, seq.prompt_ids, eos, seq.out.token_text)
        seq.handle = RequestHandle(self, seq.id, loop, params.logprobs)
        self.constraints.attach(seq)  # compiles the constraint (cached): one that cannot compile raises here
        prediction = params.prediction and self.folder.tokenizer.encode(params.prediction, add_special_tokens=False).ids
        self.speculator.attach(seq, prediction, key)
        try:
            seq.adapter = self._adapter(params.adapter)
        except BaseException:
            self._release(seq)
            raise
        return seq

    def _adapter(self, name: str | None) -> AdapterPin:
        """The pin of the request's adapter (the base model's for None). Raises ParameterError for a name that is
        not loaded or a model without LoRA inputs, QueueFullError when every adapter slot is held by requests."""
        if name is None:
            return BASE
        adapters = self.runner.adapters
        if adapters is None:
            raise ParameterError("adapter", f"this model serves no adapters (asked for {name!r}): load it with "
                                 "adapters, or build it with LoRA targets")
        try:
            return adapters.acquire(name)
        except UnknownAdapterError:
            known = ", ".join(adapters.names()) or "none"
            raise ParameterError("adapter", f"Unknown adapter {name!r} (loaded: {known})") from None
        except AdapterSlotsFullError as e:  # busy, as a full queue is: the server answers 429, a batch job waits
            raise QueueFullError(str(e)) from None

    def _release(self, seq: Sequence) -> None:
        """What a sequence holds beside its cache slot: its grammar state and its adapter."""
        self.constraints.release(seq)
        if seq.adapter.key:
            self.runner.adapters.release(seq.adapter)
            seq.adapter = BASE

    def _check_fits(self, tokens: int) -> None:
        """A request the cache's cap cannot hold even alone would wait forever: refuse it now."""
        c = self.cache
        need = c.nbytes_for(round_up(tokens), c.slots)
        if c.max_bytes is not None and need > c.max_bytes:
            raise CacheFullError(f"this request needs a KV cache of {need / 2**20:.1f} MiB ({c.slots} slots x "
                                 f"{round_up(tokens)} tokens), over the cap of {c.max_bytes / 2**20:.1f} MiB")

    def cancel(self, seq_id: int) -> None:
        """End a request at the next step (at once when no step is running); its slot is freed."""
        self._inbox.put(seq_id)
        if self._background:
            self._wake.set()
            return
        if self._lock.acquire(blocking=False):  # an inline request: its caller may never step again
            try:
                self._take_cancellations()
            finally:
                self._lock.release()
        # else a step is running (on this thread, when a generator is collected mid-step): it takes it at its end

    def reset_prefix_cache(self) -> None:
        """Forget the prompts that finished sequences left in their slots: the next prompts are computed whole."""
        with self._lock:
            self.scheduler.retained.clear()

    def stats(self) -> EngineStats:
        s = self.scheduler
        sp = self.speculator
        suffix = sp.suffix
        return EngineStats(len(s.running), len(s.waiting), self.cache.nbytes, int(self.cache.lengths.sum()),
                           self.steps, self.generated, self.prompt_tokens, s.reused_tokens, self.healthy,
                           sp.drafted, sp.accepted, sp.verifications,
                           tuple((source, d, a) for source, (d, a) in sp.by_source.items()),
                           suffix.nbytes if suffix else 0, len(suffix.stored) if suffix else 0)

    # ---- who steps --------------------------------------------------------------------------------------------

    def step_inline(self) -> bool:
        """One step on the calling thread, unless the background thread drives (then False: wait on the handle)."""
        with self._lock:
            if self._background:
                return False
            self._guarded_step()
            return True

    def _drive_in_background(self) -> None:
        """Hand the stepping to the background thread (started on first use). Called under the lock."""
        self._background = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
            self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            while not self._stop:
                with self._lock:
                    if not self._background:
                        break
                    if self.scheduler.idle and self._inbox.empty():
                        self._background = False  # the next lone inline request drives itself
                        break
                    try:
                        self._guarded_step()
                    except BaseException:  # told to every request already; a later submission starts a new thread
                        self._background, self._thread = False, None
                        return

    def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _guarded_step(self) -> None:
        try:
            self.step()
        except BaseException:  # a broken engine must not look healthy: /health turns 503, waiting callers are told
            log.exception("engine step failed unexpectedly")
            self.healthy = False
            for seq in list(self._sequences.values()):
                self._finish(seq, EngineError("the engine stopped"))
            raise

    # ---- the step ---------------------------------------------------------------------------------------------

    def step(self) -> None:
        """Schedule (with drafts when speculating), run the graph (one-token decodes in one call, prompt and
        forced chunks and verified runs in others), sample, post-process. The caller holds the engine's lock."""
        self._take_cancellations()
        plan = self.scheduler.schedule()
        plan = self.speculator.draft(plan, self.scheduler.token_budget - sum(len(item.tokens) for item in plan))
        if not plan:
            time.sleep(0.001)  # waiting requests that do not fit yet
            return
        for call in group_calls(plan, padded=self.runner.has_query_seqlens):
            one_token = call[0].decode and not call[0].draft  # decode inputs are refilled in place
            step = self._decode.build(call, self.cache) if one_token else build_step(call, self.cache)
            masks = self.constraints.start(call)  # computed by a worker thread while the graph runs
            try:
                logits = self.runner.run(step, self.cache)
            except Exception as e:  # the engine outlives a failed call; its requests end with the error
                log.exception("engine call failed")
                for item in call:
                    self._finish(item.seq, EngineError(f"generation failed: {e}"))
                continue
            self._postprocess(call, logits, masks)
        self.steps += 1
        self._take_cancellations()

    def _postprocess(self, call: list[Scheduled], logits: np.ndarray, masks: CallMasks | None) -> None:
        """Each sequence of the call advances; where its logits were computed (logits: float32 [n, vocab]: one row
        per sampling item in call order, every position of a verified run), it picks its next tokens and streams
        them. A constrained row picks under its mask, then its grammar consumes the token and may force more."""
        at = 0
        for item in call:
            seq, rows = item.seq, logits[at:at + item.logit_rows]
            at += item.logit_rows
            if seq.out.generated == 0:
                self.prompt_tokens += len(item.tokens)
            if not item.draft:
                seq.cached += len(item.tokens)
            if item.rides:  # the next forced token rides the next step
                seq.next_token = seq.forced.pop(0)
            elif len(rows):
                try:
                    accepted = 0
                    if item.draft:
                        picks, accepted = self._verify(item, rows, masks)
                    else:
                        picks = [self.next_token(seq, rows[0], masks.row(seq) if masks is not None else None)]
                        picks += self._forced(seq, picks[0][0])
                except ParameterError as e:  # the request's constraint failed mid-reply: its own error, no bug
                    self._finish(seq, e)
                    continue
                except Exception as e:  # one request's sampling failure ends that request, not the engine
                    log.exception("request %d failed", seq.id)
                    self._finish(seq, EngineError(f"generation failed: {e}"))
                    continue
                self._emit(seq, picks, accepted)

    def _verify(self, item: Scheduled, rows: np.ndarray, masks: CallMasks | None) -> tuple[list, int]:
        """A verified run's picks (rows float32 [k + 1, vocab]) and how many of them are accepted drafts. A
        constrained row picks at position 0 under the call's mask, after it under its grammar's mask then,
        consuming each draft accepted; its grammar consumes the last pick (the bonus) and the tokens it forces after
        it follow in the picks."""
        seq = item.seq
        if seq.grammar is None:
            run = self.speculator.accept(item, rows, partial(self.next_token, seq))
            return run, len(run) - 1
        at = 0

        def pick(row: np.ndarray) -> tuple:
            nonlocal at
            mask = masks.row(seq) if at == 0 else self.constraints.mask(seq)
            token, logprob = self.next_token(seq, row, mask)
            if at < len(item.draft) and token == item.draft[at] and not seq.grammar.consume(token):
                raise ParameterError(seq.params.constraint.param, f"cannot be enforced: {seq.grammar.error}")
            at += 1
            return token, logprob

        run = self.speculator.accept(item, rows, pick)
        return run + self._forced(seq, run[-1][0], len(run) - 1), len(run) - 1

    def next_token(self, seq: Sequence, logits: np.ndarray,
                   mask: np.ndarray | None = None) -> tuple[int, TokenLogprob | None]:
        """The one place where a row's logits (float32 [vocab]) become its next token. A constrained row's mask
        (int32 [words], llguidance's bitmask) sets its disallowed tokens to -inf first, so penalties, temperature,
        top-k/p and logprobs all see the masked distribution."""
        return seq.sampler.pick(logits if mask is None else apply_mask(logits, mask))

    def _forced(self, seq: Sequence, token: int, before: int = 0) -> list[tuple[int, TokenLogprob | None]]:
        """A constrained row's grammar consumes its sampled token (`before` other picks ahead of it this step); the
        picks of the tokens it forces next (within max_tokens), each the masked distribution's only choice:
        logprob 0."""
        if seq.grammar is None:
            return []
        forced = self.constraints.advance(seq, token, seq.params.max_tokens - seq.out.generated - before - 1)
        want = seq.params.logprobs
        return [(f, TokenLogprob(f, seq.out.token_text(f), 0.0) if want else None) for f in forced]

    def _emit(self, seq: Sequence, picks: list[tuple[int, TokenLogprob | None]], accepted: int = 0) -> None:
        """Stream picked tokens as one chunk, up to the one that ends the request (EOS, a stop string, max_tokens
        inside a verified run or a forced chunk: the rest is dropped). A sampled token's forced tokens are fed with
        it as one chunk in the next step; a grammar that is complete ends the request (finish_reason "stop").
        `accepted`: the picks that are a verified run's accepted drafts, in the cache already."""
        chunks = []
        for token, logprob in picks:
            self.generated += 1
            chunks.append(seq.out.add(token, logprob))
            if seq.out.finished:
                break
        if seq.grammar is None:  # a verified run's accepted drafts are in the cache already: the last pick is fed
            seq.next_token = token
        else:  # a constrained row feeds its sampled token and the forced ones after it
            seq.next_token, seq.forced = picks[accepted][0], [t for t, _ in picks[accepted + 1:len(chunks)]]
        if seq.policy is not None:  # a row with a draft source feeds it what it emitted
            self.speculator.extend(seq, [t for c in chunks for t in c.token_ids])
        if not seq.out.finished and seq.grammar is not None and seq.grammar.done:
            chunks.append(seq.out.cancel())
        chunk = Chunk.join(chunks)
        if seq.out.finished:
            self._finish(seq, chunk)
        else:
            seq.handle.put(chunk)

    def _take_cancellations(self) -> None:
        while not self._inbox.empty():
            seq = self._sequences.get(self._inbox.get())
            if seq is not None:
                self._finish(seq, seq.out.cancel())

    def _finish(self, seq: Sequence, last) -> None:
        """End `seq` with `last` (its final chunk, whose usage gets the prompt tokens the prefix cache gave it, or
        an error) and free its slot."""
        if isinstance(last, Chunk) and last.usage is not None:
            last = replace(last, usage=replace(last.usage, cached_tokens=seq.reused,
                                               accepted_prediction_tokens=seq.prediction_accepted,
                                               rejected_prediction_tokens=seq.prediction_rejected))
        if isinstance(last, Chunk):
            self.speculator.finish(seq)
        self.scheduler.finish(seq)
        self._release(seq)
        self._sequences.pop(seq.id, None)
        seq.handle.put(last)
        seq.handle.close()
