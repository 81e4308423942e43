"""The tokenizer of a GGUF file, rebuilt from its `tokenizer.ggml.*` metadata with `tokenizers` alone (no torch)."""
from __future__ import annotations

import functools
import json

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from .source import SourceError, TokenizerFiles

_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DIGITS = "digits"  # llama.cpp splits every digit first, then applies the GPT-2 regex
# tokenizer.ggml.pre -> what runs before byte-level BPE: a split regex, _DIGITS, or None for GPT-2's regex.
PRE_TOKENIZERS = {
    **dict.fromkeys(("default", "gpt-2", "gpt2", "mpt", "olmo", "jais"), None),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"), _DIGITS),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez"), _QWEN2_SPLIT),
    **dict.fromkeys(("gpt-4o", "llama4"), _GPT4O_SPLIT),
}


@functools.cache
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of each byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelled, extra = {}, 0
    for b in range(256):
        if b in keep:
            spelled[b] = chr(b)
        else:
            spelled[b] = chr(256 + extra)
            extra += 1
    return spelled


def _byte_level_bpe(meta, tokens: list[str]) -> Tokenizer:
    pre = meta("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        known = ", ".join(sorted(PRE_TOKENIZERS))
        raise SourceError(f"tokenizer.ggml.pre {pre!r} is not supported (supported: {known})")
    spelling = _byte_alphabet()
    alphabet = set(spelling.values())
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")), i)
    merges = [tuple(m.split(" ", 1)) for m in meta("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))
    split = PRE_TOKENIZERS[pre]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split is None)
    if split is None:
        tok.pre_tokenizer = byte_level
    elif split == _DIGITS:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    else:
        split_regex = pre_tokenizers.Split(Regex(split), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([split_regex, byte_level])
    tok.decoder = decoders.ByteLevel()
    return tok


def _generate_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """SentencePiece files carry scores, not merges: every split of a token into two tokens, best score first."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for token, score in zip(tokens, scores):
        halves = ((token[:k], token[k:]) for k in range(1, len(token)))
        local = [(a, b, score) for a, b in halves if a in vocab and b in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _sentencepiece_bpe(meta, tokens: list[str]) -> Tokenizer:
    merges = meta("tokenizer.ggml.merges")
    if merges:
        merges = [tuple(m.split(" ", 1)) for m in merges]
    else:
        merges = _generate_merges(tokens, meta("tokenizer.ggml.scores", [0.0] * len(tokens)))
    unk = meta("tokenizer.ggml.unknown_token_id")
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, fuse_unk=True, byte_fallback=True,
                               unk_token=tokens[unk] if unk is not None else None))
    prefix = bool(meta("tokenizer.ggml.add_space_prefix", True))
    scheme = "first" if prefix else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(content=" ", left=1, right=0)] if prefix else []))
    return tok


# tokenizer.ggml.model -> (builder, add_bos_token default)
TOKENIZER_MODELS = {"gpt2": (_byte_level_bpe, False), "llama": (_sentencepiece_bpe, True)}


def build_tokenizer_files(meta, max_length: int | None = None) -> TokenizerFiles:
    """tokenizer.json / tokenizer_config.json / special_tokens_map.json from `tokenizer.ggml.*` metadata.

    Mirrors transformers' GGUF converter (integrations/gguf/gguf_tokenizer_mapping.py), except that the
    "smollm"-family pre-tokenizer splits digits one by one, as llama.cpp does."""
    model = meta("tokenizer.ggml.model")
    if model not in TOKENIZER_MODELS:
        raise SourceError(f"tokenizer.ggml.model {model!r} is not supported (supported: {', '.join(TOKENIZER_MODELS)})")
    tokens = meta("tokenizer.ggml.tokens")
    if not tokens:
        raise SourceError("GGUF metadata has no tokenizer.ggml.tokens")
    build, add_bos_default = TOKENIZER_MODELS[model]
    tok = build(meta, tokens)
    types = meta("tokenizer.ggml.token_type") or []
    alphabet = set(_byte_alphabet().values()) if model == "gpt2" else None
    # Control tokens spelled outside the byte alphabet are llama.cpp mislabels; transformers skips them too.
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types)
                            if k == _TOKEN_CONTROL and (alphabet is None or set(t) <= alphabet)])
    vocab = tok.get_vocab()
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types)
                    if k == _TOKEN_USER_DEFINED and t in vocab])

    named = {}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        token_id = meta(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and 0 <= token_id < len(tokens):
            named[f"{name}_token"] = tokens[token_id]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in named.values()])
    add_bos = bool(meta("tokenizer.ggml.add_bos_token", add_bos_default)) and "bos_token" in named
    add_eos = bool(meta("tokenizer.ggml.add_eos_token", False)) and "eos_token" in named
    bos, eos = named.get("bos_token"), named.get("eos_token")
    single = ([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos else [])
    pair = single + ([f"{bos}:1"] if add_bos else []) + ["$B:1"] + ([f"{eos}:1"] if add_eos else [])
    specials = ([(bos, tok.token_to_id(bos))] if add_bos else []) + ([(eos, tok.token_to_id(eos))] if add_eos else [])
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)

    chat_template = meta("tokenizer.chat_template")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **named,
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(max_length) if max_length else int(1e30),
    }
    if chat_template:
        config["chat_template"] = chat_template
    files = {
        "tokenizer.json": json.loads(tok.to_str()),
        "tokenizer_config.json": config,
        "special_tokens_map.json": dict(named),
    }
    return TokenizerFiles(files=files, chat_template=chat_template)
