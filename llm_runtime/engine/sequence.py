"""One request in flight: its prompt, sampling state, output stream, cache slot and progress."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum

from llm_runtime.adapters.registry import BASE, AdapterPin
from llm_runtime.sampling.params import SamplingParams
from llm_runtime.sampling.request_sampler import RequestSampler
from llm_runtime.speculation import DraftPolicy, Proposer
from llm_runtime.speculation.prediction import PredictionLookup
from llm_runtime.speculation.suffix_lookup import SuffixLookup
from llm_runtime.structured.grammar_state import GrammarState

from .output_stream import OutputStream

_ids = itertools.count()


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    sampler: RequestSampler | None = None
    out: OutputStream | None = None
    handle: object = None  # RequestHandle, fed with chunks
    id: int = field(default_factory=lambda: next(_ids))
    slot: int = -1
    cached: int = 0  # tokens already in this sequence's cache slot
    reused: int = 0  # prompt tokens taken from the prefix cache instead of computed (usage's cached_tokens)
    next_token: int = -1  # the last sampled token, fed by the next decode
    forced: list[int] = field(default_factory=list)  # tokens a grammar forced after it, fed with it as one chunk
    grammar: GrammarState | None = None  # a constrained request's matcher state
    status: Status = Status.WAITING
    proposer: Proposer | None = None  # drafts this sequence's next tokens (speculation on)
    suffix: SuffixLookup | None = None  # drafts from the suffix cache (method "suffix")
    prediction: PredictionLookup | None = None  # drafts from the request's predicted output
    policy: DraftPolicy | None = None  # how many it drafts (None: it never drafts)
    prediction_accepted: int = 0  # drafted prediction tokens accepted (usage's accepted_prediction_tokens)
    prediction_rejected: int = 0  # drafted prediction tokens rejected (usage's rejected_prediction_tokens)
    adapter: AdapterPin = BASE  # its LoRA adapter's slot and key, held from submission to its end

    @property
    def prefilling(self) -> bool:
        return self.cached < len(self.prompt_ids)

    @property
    def max_length(self) -> int:
        """Cache tokens this sequence can reach: prompt plus max_tokens."""
        return len(self.prompt_ids) + self.params.max_tokens
