"""Per-request output: token ids in, text chunks out, with stop ids, stop strings and length limits."""
from __future__ import annotations

from tokenizers import Tokenizer

from llm_runtime.completion import Chunk, TokenLogprob, Usage
from llm_runtime.sampling.params import SamplingParams

from .detokenizer import IncrementalDetokenizer
from .stop_strings import StopStringMatcher


class OutputStream:
    """Folds one sequence's sampled tokens into chunks; `finished` says when generation must end."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], params: SamplingParams, eos_ids):
        self.tokenizer = tokenizer
        self.params = params
        self.prompt_tokens = len(prompt_ids)
        self.stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else frozenset(eos_ids))
        self.detok = IncrementalDetokenizer(tokenizer, prompt_ids, params.skip_special_tokens)
        self.stops = StopStringMatcher(params.stop)
        self.generated = 0
        self.finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, token: int, logprob: TokenLogprob | None = None) -> Chunk:
        """Account for one sampled token and return its chunk (the last one carries finish_reason and usage)."""
        self.generated += 1
        if token in self.stop_ids:
            self.finish_reason = "stop"
            text = self._drain()
        else:
            text, stopped = self.stops.feed(self.detok.add(token))
            if stopped:
                self.finish_reason = "stop"
            elif self.generated >= self.params.max_tokens:
                self.finish_reason = "length"
                text += self._drain()
        usage = Usage(self.prompt_tokens, self.generated) if self.finished else None
        return Chunk(text, (token,), self.finish_reason, (logprob,) if logprob else (), usage)

    def cancel(self) -> Chunk:
        """End early (a cancelled request): release held text, no further tokens."""
        self.finish_reason = self.finish_reason or "stop"
        text = self._drain()
        return Chunk(text, (), self.finish_reason, (), Usage(self.prompt_tokens, self.generated))

    def _drain(self) -> str:
        """Release held-back text at the end; a stop string that it completes still ends the output there."""
        text, stopped = self.stops.feed(self.detok.flush())
        if stopped:
            self.finish_reason = "stop"
            return text
        return text + self.stops.flush()

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False)
