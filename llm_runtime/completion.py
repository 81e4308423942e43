"""What generation returns: streamed chunks, and the completion that folds them."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()  # (id, text, logprob), most likely first


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of the prompt tokens, those taken from the prefix cache instead of computed
    accepted_prediction_tokens: int = 0  # drafted tokens of the request's prediction that verification accepted
    rejected_prediction_tokens: int = 0  # drafted tokens of the request's prediction that it rejected

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Chunk:
    """One streamed step: a text delta (possibly empty), the ids it came from, and the end reason on the last one."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None = None  # "stop" | "length" on the last chunk
    logprobs: tuple[TokenLogprob, ...] = ()
    usage: Usage | None = None  # on the last chunk

    @classmethod
    def join(cls, chunks: list["Chunk"]) -> "Chunk":
        """Consecutive chunks of one stream as one (a reader that fell behind catches up in one piece)."""
        if len(chunks) == 1:
            return chunks[0]
        last = chunks[-1]
        return cls("".join(c.text for c in chunks), tuple(t for c in chunks for t in c.token_ids), last.finish_reason,
                   tuple(lp for c in chunks for lp in c.logprobs), last.usage)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str | None
    usage: Usage | None
    logprobs: list[TokenLogprob] | None = field(default=None)
    tool_calls: list | None = None  # ToolCalls parsed from a chat reply that offered tools (then text is the content)

    @classmethod
    def fold(cls, chunks: Iterable[Chunk], want_logprobs: bool = False) -> "Completion":
        """The non-streamed result is a fold over the stream: one code path."""
        text, ids, lps, last = [], [], [], None
        for c in chunks:
            text.append(c.text)
            ids.extend(c.token_ids)
            lps.extend(c.logprobs)
            last = c
        return cls("".join(text), ids, last.finish_reason if last else None, last.usage if last else None,
                   lps if want_logprobs else None)
