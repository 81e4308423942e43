"""Decides what each step computes: decodes of running sequences first, then prompt chunks, within a token budget."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from llm_runtime.kv_cache import KVCache, round_up

from .config import EngineConfig
from .prefix import Donor, find_donor
from .prompt_split import MIN_SHARED, prefill_chunk
from .sequence import Sequence, Status


class QueueFullError(RuntimeError):
    """The waiting queue is at its bound: the caller should retry later."""


@dataclass(frozen=True)
class Scheduled:
    seq: Sequence
    tokens: list[int]  # fed this step: one decode token (then its drafts, if any), a sampled token and the tokens
    # its grammar forced after it (a forced chunk), or a prompt chunk
    draft: tuple[int, ...] = ()  # the drafted tokens at the end of `tokens`, verified by this call
    rides: bool = False  # a forced token fed alone in the decode call: the grammar chose the next one, no logits
    source: str = ""  # where the drafts come from: "prediction", "ngram" or "suffix"

    @property
    def logit_rows(self) -> int:
        """Rows of logits this item gets back: every position of a verified run, else its last one if it samples."""
        return len(self.tokens) if self.draft else int(self.wants_logits)

    @property
    def decode(self) -> bool:
        """One sampled token fed back (the prompt is all in the cache; drafts may follow it), not a prompt chunk
        nor a forced chunk."""
        return self.seq.cached >= len(self.seq.prompt_ids) and len(self.tokens) == 1 + len(self.draft)

    @property
    def wants_logits(self) -> bool:
        """A decode, or the chunk that completes the prompt, samples a token; a riding forced token does not."""
        return not self.rides and self.seq.cached + len(self.tokens) >= len(self.seq.prompt_ids)


class Scheduler:
    def __init__(self, cache: KVCache, config: EngineConfig):
        self.cache = cache
        self.max_concurrency = min(config.max_concurrency, cache.max_slots)
        self.max_waiting = config.max_waiting
        self.token_budget = config.token_budget
        self.chunk_size = config.chunk_size
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.reused_tokens = 0  # prompt tokens taken from another sequence's cache instead of computed
        # free slot -> (adapter key, the prompt tokens a finished sequence left in it under that adapter), until the
        # slot is given to another sequence
        self.retained: dict[int, tuple[int, list[int]]] = {}

    def add(self, seq: Sequence) -> None:
        if len(self.waiting) >= self.max_waiting:
            raise QueueFullError(f"the waiting queue is full ({self.max_waiting} requests)")
        self.waiting.append(seq)

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def schedule(self) -> list[Scheduled]:
        """This step's work: every running decode (with the tokens a grammar forced after it), then prompt chunks
        (running first, then admitted). Forced tokens come as a chunk after their sampled token when the row
        decodes alone; beside other decodes they ride the one-token decode call instead, one a step, with no
        logits and no mask: a chunk there would cost a call of its own (at 16 rows: 13-17 ms per chunk call
        against 2.1 ms per row of the decode call)."""
        budget = self.token_budget
        decoding = [s for s in self.running if not s.prefilling]
        ride = len(decoding) > 1
        plan = [Scheduled(s, [s.next_token], rides=True) if ride and s.forced else Scheduled(s, [s.next_token, *s.forced])
                for s in decoding]
        budget -= sum(len(item.tokens) for item in plan)
        for seq in [s for s in self.running if s.prefilling]:
            if budget <= 0:
                break
            budget -= self._add_chunk(plan, seq, budget)
        while budget > 0 and self.waiting and len(self.running) < self.max_concurrency:
            seq = self.waiting[0]
            donor = self._donor(seq)
            if donor is not None and donor.ready < donor.shared:
                break  # the donor is still computing the prefix: take it when it is cached, not compute it twice
            if not self._admit(seq, donor):
                break
            self.waiting.popleft()
            budget -= self._add_chunk(plan, seq, budget)
        return plan

    def _add_chunk(self, plan: list[Scheduled], seq: Sequence, budget: int) -> int:
        """Plan `seq`'s next prompt chunk, cut by `prefill_chunk`; returns its length (0: none this step)."""
        n = prefill_chunk(len(seq.prompt_ids) - seq.cached, min(self.chunk_size, budget))
        if n:
            plan.append(Scheduled(seq, seq.prompt_ids[seq.cached:seq.cached + n]))
        return n

    def _donor(self, seq: Sequence) -> Donor | None:
        """Where `seq`'s prompt prefix can come from. A window-sized layer's rows are not positions (the op compacts
        them), so such caches share nothing; copying between running slots needs host buffers."""
        if self.cache.window_rows:
            return None
        return find_donor(seq, self.running if self.cache.copies_slots else [], self.retained)

    def _admit(self, seq: Sequence, donor: Donor | None) -> bool:
        """Give `seq` a slot if the cache can hold it next to the running sequences, with the donor's prefix
        (a free donor slot is taken as is; other slots are given out least valuable first: not retained)."""
        need = round_up(max([seq.max_length] + [s.max_length for s in self.running]))
        slots = self.cache.slots if donor and donor.free else self.cache.slots_after_allocation
        if self.cache.max_bytes is not None and self.cache.nbytes_for(max(need, self.cache.capacity), slots) > self.cache.max_bytes:
            return False
        self.cache.ensure_capacity(need)
        seq.slot = self.cache.take_slot(donor.slot) if donor and donor.free else self.cache.allocate_slot(self.retained)
        self.retained.pop(seq.slot, None)
        if donor is not None:
            if not donor.free:
                self.cache.copy_slot_prefix(donor.slot, seq.slot, donor.ready)
            self.cache.lengths[seq.slot] = seq.cached = seq.reused = donor.ready
            self.reused_tokens += donor.ready
        seq.status = Status.RUNNING
        self.running.append(seq)
        return True

    def finish(self, seq: Sequence) -> None:
        """Remove a finished or cancelled sequence and free its slot at once; what the slot holds stays there for a
        later prompt that starts the same way (the next turn of the conversation), until the slot is given out."""
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
            self.cache.free_slot(seq.slot)
            if seq.cached >= MIN_SHARED and not self.cache.window_rows:
                self.retained[seq.slot] = (seq.adapter.key, seq.prompt_ids[:seq.cached])
        elif seq.status is Status.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = Status.FINISHED
