"""Shared prompt prefixes: a new sequence whose prompt starts like another sequence's prompt (a system prompt, the
history of a conversation) takes the keys and values of those tokens instead of computing them again: copied from
a running sequence's slot, or in place from the slot a finished sequence left. Only prompt tokens are shared:
they were computed by multi-token calls, like the newcomer's own prefill (bit-identical); generated tokens were
fed by one-token calls, which round differently. Keys and values depend on the adapter they were computed under:
only a prefix cached under the same adapter (the same load of it) is shared."""
from __future__ import annotations

from dataclasses import dataclass

from .prompt_split import reusable
from .sequence import Sequence


@dataclass(frozen=True)
class Donor:
    slot: int
    shared: int  # leading prompt tokens the slot holds or will hold (`reusable`)
    ready: int  # of those, already in the slot's cache: what can be taken now
    free: bool  # a finished sequence's slot: the newcomer takes the slot itself, no copy


def find_donor(seq: Sequence, running: list[Sequence], retained: dict[int, tuple[int, list[int]]]) -> Donor | None:
    """The best source of `seq`'s prompt prefix: the most shared tokens, then the most of them ready, then a free
    slot (no copy). `running`: sequences whose slots can be copied; `retained`: free slot -> (the adapter key the
    tokens were computed under, the tokens it holds)."""
    key = seq.adapter.key
    donors = [Donor(o.slot, n, min(n, o.cached), False) for o in running
              if o.adapter.key == key and (n := reusable(o.prompt_ids, seq.prompt_ids))]
    donors += [Donor(slot, n, n, True) for slot, (held_key, held) in retained.items()
               if held_key == key and (n := reusable(held, seq.prompt_ids))]
    return max(donors, key=lambda d: (d.shared, d.ready, d.free), default=None)
