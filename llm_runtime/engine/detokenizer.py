"""Incremental detokenization: token ids in, text deltas out, with a bounded decode window.

Prefix-offset / read-offset technique (vLLM, text-generation-inference): keep a short window of
ids whose first `_read` ids (the prefix) are already emitted. Each step decodes the whole window and
emits what lies beyond the prefix's text. Decoding the prefix along with the new ids keeps the
decoder's context (SentencePiece's leading-space strip, byte-level merges) the same as a full decode.

    window:  [ p0 p1 | n0 n1 ]      text(window) = text(prefix) + delta
              prefix   pending
"""
from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

REPLACEMENT = "\ufffd"
PROMPT_CONTEXT = 5  # prompt ids kept as the first prefix, as in vLLM and TGI
HOLD_LIMIT = 32  # pending ids after which text is emitted even if it looks unfinished
HARD_LIMIT = 128  # pending ids after which even a trailing U+FFFD is emitted


def byte_fallback_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """Ids of SentencePiece byte-fallback tokens `<0x00>`..`<0xFF>` (empty for other tokenizers)."""
    ids = (tokenizer.token_to_id(f"<0x{b:02X}>") for b in range(256))
    return frozenset(i for i in ids if i is not None)


def special_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """Ids of added tokens marked special, the ones `decode(skip_special_tokens=True)` drops."""
    return frozenset(i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special)


class IncrementalDetokenizer:
    """Turns a stream of generated ids into text deltas.

    Deltas plus `flush()` join to `tokenizer.decode(ids)` (or, given `prompt_ids`, to the text the
    ids add after the prompt). An unfinished UTF-8 character is held back, never shown as U+FFFD:
    byte-level BPE decodes it as a trailing U+FFFD, and a SentencePiece byte-fallback run may still
    turn invalid, so text waits while the window ends in U+FFFD or in a `<0xXX>` token. Per-token
    cost is bounded: the window holds a few ids, never more than `2 * HARD_LIMIT`.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._skip = special_ids(tokenizer) if skip_special_tokens else frozenset()
        self._byte_ids = byte_fallback_ids(tokenizer)
        self._window: list[int] = [int(i) for i in prompt_ids if i not in self._skip][-PROMPT_CONTEXT:]
        self._read = len(self._window)  # window[:_read] is the prefix, already emitted
        self._prefix_text = self._decode(self._window)

    def add(self, token_id: int) -> str:
        """Feed one generated id; return the newly finished text (possibly "")."""
        token_id = int(token_id)
        if token_id in self._skip:  # decode drops it, so it changes nothing
            return ""
        self._window.append(token_id)
        text = self._decode(self._window)
        pending = len(self._window) - self._read
        if self._unfinished(text, token_id) and pending < HARD_LIMIT:
            if pending < HOLD_LIMIT or text.endswith(REPLACEMENT):
                return ""
        return self._emit(text)

    def flush(self) -> str:
        """Return whatever is still held back; call once when generation ends."""
        if len(self._window) == self._read:
            return ""
        return self._emit(self._decode(self._window))

    def _unfinished(self, text: str, token_id: int) -> bool:
        # an empty delta keeps its ids pending: as a prefix alone they could decode differently
        return (text.endswith(REPLACEMENT) or token_id in self._byte_ids
                or len(text) <= len(self._prefix_text) or not text.startswith(self._prefix_text))

    def _emit(self, text: str) -> str:
        """Return the text beyond the prefix; the pending ids become the next prefix."""
        delta = text[len(self._prefix_text):]
        self._window = self._window[self._read:]
        self._read = len(self._window)
        self._prefix_text = self._decode(self._window)
        return delta

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens) if ids else ""
