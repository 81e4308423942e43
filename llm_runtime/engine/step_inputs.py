"""A step's graph calls and their inputs: which scheduled items share a call, a right-padded prompt-chunk call, and
a decode call whose arrays are refilled in place from step to step."""
from __future__ import annotations

import numpy as np

from llm_runtime.graph.runner import Step
from llm_runtime.kv_cache import KVCache

from .scheduler import Scheduled


def padded_tokens(items: list[Scheduled]) -> int:
    """Token rows one right-padded call over these items computes: every slot in their range times the widest."""
    slots = [item.seq.slot for item in items]
    return (max(slots) - min(slots) + 1) * max(len(item.tokens) for item in items)


def group_calls(plan: list[Scheduled], padded: bool = True) -> list[list[Scheduled]]:
    """A step's graph calls. The decodes share a one-token call: GroupQueryAttention's one-token path, the one
    a sequence takes alone (right-padding them to a chunk's width would multiply their work and change their
    numerics). The prompt chunks and forced chunks (a sampled token plus the tokens its grammar forced) share one
    right-padded call while padding costs no more than the work itself, else they go one call each; so do the
    verified runs of speculating rows (last token plus drafts), in calls of their own. A graph without
    query_seqlens (`padded` False: onnxruntime-genai's builder, onnxruntime < 1.32) takes neither idle nor padded
    rows: decodes go in runs of consecutive slots, each run and chunk alone."""
    if len(plan) == 1:  # a lone sequence: its one call
        return [plan]
    decodes = sorted((item for item in plan if item.decode and not item.draft), key=lambda item: item.seq.slot)
    verified = sorted((item for item in plan if item.draft), key=lambda item: item.seq.slot)
    chunks = [item for item in plan if not item.decode]  # prompt chunks and forced chunks
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
    """Right-pad the items (prompt or forced chunks, or verified runs) into one call over the slots they span;
    idle slots in between get Q = 0. Fresh arrays: a chunk call's shape changes from step to step."""
    first = min(item.seq.slot for item in items)
    rows = max(item.seq.slot for item in items) - first + 1
    width = max(len(item.tokens) for item in items)
    ids = np.zeros((rows, width), np.int64)  # [rows, S]
    totals = np.maximum(cache.lengths[first:first + rows], 1)  # idle rows keep their length (at least 1, the op's rule)
    query = np.zeros(rows, np.int64)
    logits_at = []
    lora = np.zeros(rows, np.int64) if any(item.seq.adapter.slot for item in items) else None  # [rows]
    for item in items:
        row, n = item.seq.slot - first, len(item.tokens)
        ids[row, :n] = item.tokens
        if lora is not None:
            lora[row] = item.seq.adapter.slot
        totals[row] = item.seq.cached + n
        query[row] = n
        if item.draft:  # every position of a verified run
            logits_at.extend(range(row * width, row * width + n))
        elif item.wants_logits:
            logits_at.append(row * width + n - 1)
    return Step(ids, totals, query, np.array(logits_at, np.int64), first, lora)


class DecodeInputs:
    """The inputs of a decode call (items sorted by slot, one token each), refilled in place while the call spans
    the same slots: the runner sees the arrays it has bound already and binds nothing, and nothing is allocated
    (one lone row: four element writes)."""

    def __init__(self):
        self._step: Step | None = None

    def build(self, items: list[Scheduled], cache: KVCache) -> Step:
        first, last = items[0].seq.slot, items[-1].seq.slot
        rows, s = last - first + 1, self._step
        sampling = sum(item.wants_logits for item in items)  # riding forced tokens need no logits
        if s is None or s.first_slot != first or len(s.totals) != rows or len(s.logits_at) != sampling:
            s = self._step = Step(np.zeros((rows, 1), np.int64), np.ones(rows, np.int64), np.zeros(rows, np.int64),
                                  np.zeros(sampling, np.int64), first, np.zeros(rows, np.int64))
        if len(items) < rows:  # idle slots in the range keep their length (at least 1) and compute nothing
            np.maximum(cache.lengths[first:first + rows], 1, out=s.totals)
            s.query_lens[:] = 0
            s.lora_index[:] = 0
        i = 0
        for item in items:
            row = item.seq.slot - first
            s.input_ids[row, 0] = item.tokens[0]
            s.totals[row] = item.seq.cached + 1
            s.query_lens[row] = 1
            s.lora_index[row] = item.seq.adapter.slot
            if item.wants_logits:
                s.logits_at[i] = row
                i += 1
        return s
