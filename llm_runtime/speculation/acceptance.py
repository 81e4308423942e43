"""Which drafted tokens a verification call accepts: pure functions over the rows of logits it returned.

A row that speculated fed its last token plus k drafts d[0..k-1] and got k + 1 rows of logits: row i is the
model's next-token distribution after the sequence plus d[:i]. Row 0 is what a plain decode step would have seen;
row i is valid only while d[:i] were all accepted. So verification walks the rows in order: at row i the
request's own sampling chain (logits processors, with the history holding d[:i], then its filters and draw) picks
a token t[i], exactly as an ordinary step would; the draft is accepted while t[i] == d[i], and the first t[i]
that differs (or t[k] after k accepted drafts, the bonus) is emitted last.

Greedy: t[i] is the argmax, so a draft is accepted when it equals the argmax.
Sampling: with a deterministic draft (q is one-hot at d[i]) the speculative-sampling rule (Leviathan et al.,
Chen et al.) accepts d[i] with probability min(1, p(d)/q(d)) = p(d) and, on rejection, samples from the
residual max(0, p - q), which is p with d[i] removed, renormalised. Drawing t ~ p and accepting iff t == d is
that rule: P(accept) = p(d), and given t != d, t is distributed as p restricted to the other tokens. It also
draws the same single uniform per emitted token as decoding without speculation, so a seeded request gives the
same tokens with and without speculation wherever the logits agree.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def verify_run(draft: Sequence[int], rows: np.ndarray, pick: Callable[[np.ndarray], tuple]) -> list[tuple]:
    """Walk a verified run: rows float32 [k + 1, vocab]; `pick(row)` is the request's whole sampling chain and
    returns (token, extra) with the token first, recording it in the request's history. Returns the picks
    emitted: the accepted drafts' and the one after them, 1 to k + 1 of them (so len - 1 drafts were accepted).
    Greedy verification is this walk with `pick` an argmax: a draft is accepted when it equals the argmax."""
    emitted = []
    for i, row in enumerate(rows[:len(draft) + 1]):
        emitted.append(pick(row))
        if i == len(draft) or emitted[-1][0] != draft[i]:
            break
    return emitted
