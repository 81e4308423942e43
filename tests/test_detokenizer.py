"""IncrementalDetokenizer against tokenizer.decode on byte-level BPE and SentencePiece-style tokenizers."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import SentencePieceBPETokenizer, Tokenizer, decoders, models, pre_tokenizers, trainers

from llm_runtime.engine.detokenizer import HARD_LIMIT, HOLD_LIMIT, IncrementalDetokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "Héllo wörld, naïve café! ¿Qué tal? Ça va très bien, merci.",
    "日本語のテキストと中文文本 한국어 텍스트",
    "Emoji: 🙂🚀👍🏽 and symbols € ∑ → ✓",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>",
] * 10
SPECIALS = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SAMPLES = ["Héllo wörld 🙂 日本語", "  two  spaces, then\nnewline 🚀👍🏽", "中文 and café", "a", " ", "Paris.", "€∑→✓ 한국어"]


def byte_level_bpe() -> Tokenizer:
    """GPT-2 / SmolLM style: byte-level pre-tokenizer and decoder; multi-byte characters span tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def llama_sentencepiece() -> Tokenizer:
    """Llama 2 style: Metaspace pieces, <0xXX> byte fallback for characters outside the vocab (CJK, emoji)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator([line for line in CORPUS if "🙂" not in line and "日" not in line], trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    spec["model"]["byte_fallback"] = True
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return Tokenizer.from_str(json.dumps(spec))


def metaspace_bpe() -> Tokenizer:
    """tokenizers' SentencePieceBPETokenizer: Metaspace decoder, <unk> instead of byte fallback."""
    tok = SentencePieceBPETokenizer()
    tok.train_from_iterator(CORPUS, vocab_size=300, special_tokens=SPECIALS, show_progress=False)
    return Tokenizer.from_str(tok.to_str())


TOKENIZERS = {"byte_level": byte_level_bpe(), "llama_sp": llama_sentencepiece(), "metaspace": metaspace_bpe()}


def stream(tok: Tokenizer, ids: list[int], prompt_ids=(), skip: bool = True) -> list[str]:
    detok = IncrementalDetokenizer(tok, prompt_ids, skip_special_tokens=skip)
    return [detok.add(i) for i in ids] + [detok.flush()]


def check_stream(tok: Tokenizer, ids: list[int], skip: bool) -> None:
    deltas = stream(tok, ids, skip=skip)
    full = tok.decode(ids, skip_special_tokens=skip)
    assert "".join(deltas) == full
    emitted = ""
    for delta in deltas:  # nothing shown is ever taken back, so no U+FFFD unless decode() has it there
        emitted += delta
        assert full.startswith(emitted)


def test_byte_fallback_tokenizer_really_falls_back():
    tok = TOKENIZERS["llama_sp"]
    assert "<0xF0>" in tok.encode("🙂").tokens
    assert len(byte_level_bpe().encode("🙂").ids) > 1


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("skip", [True, False])
def test_random_ids_join_to_decode(name, skip):
    tok = TOKENIZERS[name]
    ids = st.lists(st.integers(0, tok.get_vocab_size() - 1), max_size=HOLD_LIMIT - 2)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ids)
    def prop(ids):
        check_stream(tok, ids, skip)

    prop()


@pytest.mark.parametrize("name", TOKENIZERS)
def test_encoded_text_streams_without_replacement_chars(name):
    tok = TOKENIZERS[name]

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.sampled_from(SAMPLES + ["\n", "ü", "🙂"]), max_size=6).map("".join) | st.text(max_size=12))
    def prop(text):
        ids = tok.encode(text).ids
        check_stream(tok, ids, skip=True)
        if "\ufffd" not in tok.decode(ids):
            assert all("\ufffd" not in d for d in stream(tok, ids))

    prop()


@pytest.mark.parametrize("name", ["byte_level", "llama_sp"])
def test_multibyte_character_held_until_complete(name):
    tok = TOKENIZERS[name]
    ids = tok.encode("ok 🙂").ids
    assert tok.decode(ids[-1:]) == "\ufffd"  # the emoji's last byte is a token of its own
    detok = IncrementalDetokenizer(tok)
    deltas = [detok.add(i) for i in ids]
    assert "".join(deltas[:-1]) in ("ok", "ok ")  # byte fallback may hold the space's run too
    assert "".join(deltas) + detok.flush() == "ok 🙂"
    assert all("\ufffd" not in d for d in deltas)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_prompt_context_keeps_leading_space(name):
    tok = TOKENIZERS[name]
    ids = tok.encode("Paris is the capital of France, café 🙂").ids
    full = tok.decode(ids)
    for k in range(1, len(ids)):
        prompt_text = tok.decode(ids[:k])
        if prompt_text.endswith("\ufffd"):  # a prompt cut inside a character has no text of its own
            continue
        assert full.startswith(prompt_text)
        assert "".join(stream(tok, ids[k:], prompt_ids=ids[:k])) == full[len(prompt_text):]


def test_special_tokens_skipped_or_kept():
    tok = TOKENIZERS["llama_sp"]
    end = tok.token_to_id("<|im_end|>")
    ids = tok.encode("Paris.").ids + [end] + tok.encode(" Lyon").ids
    assert "".join(stream(tok, ids)) == tok.decode(ids) == "Paris. Lyon"
    assert "<|im_end|>" in "".join(stream(tok, ids, skip=False))


@pytest.mark.parametrize("name", ["byte_level", "llama_sp"])
def test_window_stays_bounded(name):
    tok = TOKENIZERS[name]
    long_ids = tok.encode(" ".join(SAMPLES) * 40).ids
    garbage = [tok.encode("🙂").ids[1]] * 500  # continuation bytes that never complete
    for ids in (long_ids, garbage):
        detok = IncrementalDetokenizer(tok)
        out = []
        for i in ids:
            out.append(detok.add(i))
            assert len(detok._window) <= 2 * HARD_LIMIT
        out.append(detok.flush())
        if ids is long_ids:
            assert "".join(out) == tok.decode(ids)


def test_long_byte_fallback_run_stays_exact():
    tok = TOKENIZERS["llama_sp"]
    ids = tok.encode("🙂🚀👍" * 20 + " done").ids
    assert len(ids) > 2 * HOLD_LIMIT
    check_stream(tok, ids, skip=True)
