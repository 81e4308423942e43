"""One constrained row's grammar state: which tokens may come next, what it has consumed, what it forces."""
from __future__ import annotations

import llguidance as llg


class GrammarState:
    """Wraps one request's llguidance matcher. Tokens the engine samples (or forces) go through `consume`;
    `forced()` lists the tokens the grammar allows as the only continuation (fast-forward tokens)."""

    def __init__(self, matcher: llg.LLMatcher, eos_ids: list[int]):
        self.matcher = matcher
        self.eos_ids = frozenset(eos_ids)
        self.consumed = 0

    @property
    def done(self) -> bool:
        """The grammar is complete and allows nothing but end of sequence."""
        return self.matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        return self.matcher.is_accepting()

    @property
    def error(self) -> str:
        return self.matcher.get_error()

    def consume(self, token: int) -> bool:
        """Advance over a sampled token; False (and an error state) if the grammar did not allow it."""
        if self.matcher.is_error():  # its mask allowed only EOS, which an erring matcher takes: no match
            return False
        if token in self.eos_ids and self.accepting:
            return True  # the end of the reply: nothing left to match
        ok = self.matcher.consume_token(int(token))
        self.consumed += ok
        return ok

    def forced(self) -> list[int]:
        """Tokens the grammar forces next, in order (possibly none); they are not consumed yet."""
        return [] if self.done else self.matcher.compute_ff_tokens()

    def draftable(self, draft: list[int]) -> int:
        """How many leading tokens of a draft a verified run may hold: each one allowed, and none after which the
        grammar forces tokens or is complete (plain decoding feeds forced tokens without sampling them, and ends a
        complete reply, so a run that held such a token would draw where decoding does not; that token may still be
        the run's last pick). The state is left as it was."""
        consumed = n = 0
        for t in draft:
            if t in self.eos_ids or self.matcher.try_consume_tokens([int(t)]) != 1:
                break
            consumed += 1
            if self.matcher.is_stopped() or self.matcher.compute_ff_tokens():
                break
            n += 1
        if consumed:
            self.matcher.rollback(consumed)
        return n

    def consume_forced(self, tokens: list[int]) -> bool:
        ok = self.matcher.consume_tokens([int(t) for t in tokens])
        self.consumed += len(tokens) if ok else 0
        return ok

    def rollback(self, tokens: int) -> bool:
        """Undo the last `tokens` consumed tokens (rejected speculative tokens, a rewound turn)."""
        ok = self.matcher.rollback(tokens)
        self.consumed -= tokens if ok else 0
        return ok
