"""GGUFSource: tiny random Llamas written to GGUF here, and the real SmolLM2-135M-Instruct Q4_1 file."""
from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llm_runtime.model_builder.gguf_source import GGUFSource, llama3_rope_scaling
from llm_runtime.model_builder.source import SourceError

QT = gguf.GGMLQuantizationType
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
CORPUS = ["hello world, the quick brown fox jumps over the lazy dog"] * 20 + ["café naïve 2024 numbers 12345"]
# Written independently of the module's tables: Hugging Face suffix -> GGUF suffix.
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def gguf_name(hf: str) -> str:
    if hf in TOP_NAMES:
        return TOP_NAMES[hf]
    _, _, i, rest = hf.split(".", 3)
    return f"blk.{i}.{LAYER_NAMES[rest]}"


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def gpt2_metadata(w: gguf.GGUFWriter, bpe: Tokenizer) -> None:
    vocab = bpe.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(bpe.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)


def tiny_llama(vocab_size: int, tied: bool) -> tuple[LlamaConfig, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-5, rope_theta=50000.0, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms start at 1.0; make them distinguishable
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    if tied:
        weights.pop("lm_head.weight")
    return cfg, weights


def write_llama(path: Path, cfg: LlamaConfig, weights: dict, qtype: QT, tokenizer=None, arch="llama",
                extra_tensors=()) -> dict[str, np.ndarray]:
    """Write a llama GGUF the way llama.cpp's converter does; returns what was stored, by Hugging Face name."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(cfg.head_dim)
    if tokenizer is not None:
        tokenizer(w)
    stored = {}
    for hf, arr in weights.items():
        if hf.endswith("q_proj.weight"):
            arr = permute(arr, cfg.num_attention_heads)
        elif hf.endswith("k_proj.weight"):
            arr = permute(arr, cfg.num_key_value_heads)
        if arr.ndim == 1 or qtype == QT.F32:
            w.add_tensor(gguf_name(hf), arr.astype(np.float32))
        elif qtype == QT.F16:
            w.add_tensor(gguf_name(hf), arr.astype(np.float16))
        else:
            arr = gguf.quants.quantize(arr, qtype)
            w.add_tensor(gguf_name(hf), arr, raw_dtype=qtype)
        stored[hf] = arr
    for name, arr, raw in extra_tensors:
        w.add_tensor(name, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, bpe):
    """(path, cfg, hf weights, stored) per (qtype, tied), written once."""
    cache = {}

    def make(qtype: QT, tied: bool):
        if (qtype, tied) not in cache:
            cfg, weights = tiny_llama(bpe.get_vocab_size(), tied)
            path = tmp_path_factory.mktemp("gguf") / f"tiny-{qtype.name}-{tied}.gguf"
            stored = write_llama(path, cfg, weights, qtype, tokenizer=lambda w: gpt2_metadata(w, bpe))
            cache[qtype, tied] = path, cfg, weights, stored
        return cache[qtype, tied]

    return make


@pytest.mark.parametrize("tied", [True, False])
def test_config_matches_llama_config(tiny, tied):
    path, cfg, _, _ = tiny(QT.F32, tied)
    src = GGUFSource(path)
    c = src.config
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings",
                "bos_token_id", "eos_token_id"):
        assert c[key] == getattr(cfg, key), key
    assert c["rope_theta"] == cfg.rope_parameters["rope_theta"]
    assert c["model_type"] == "llama" and c["architectures"] == ["LlamaForCausalLM"] and "rope_scaling" not in c
    assert LlamaConfig(**c).head_dim == cfg.head_dim
    assert src.generation_config == {"bos_token_id": 1, "eos_token_id": 2}
    assert src.description.endswith("(F32)") and src.description.startswith("gguf:")
    assert ("lm_head.weight" in src.names()) is not tied


@pytest.mark.parametrize("qtype", [QT.F32, QT.F16, QT.Q8_0, QT.Q4_0], ids=lambda q: q.name)
def test_get_returns_hf_weights(tiny, qtype):
    path, cfg, weights, stored = tiny(qtype, False)
    src = GGUFSource(path)
    assert sorted(src.names()) == sorted(weights)
    heads = {"q_proj": cfg.num_attention_heads, "k_proj": cfg.num_key_value_heads}
    for name, ref in weights.items():
        got = src.get(name)
        assert got.dtype == np.float32 and got.shape == ref.shape and got.flags.c_contiguous, name
        if qtype == QT.F32 or ref.ndim == 1:
            np.testing.assert_array_equal(got, ref, err_msg=name)
        elif qtype == QT.F16:
            np.testing.assert_array_equal(got, ref.astype(np.float16).astype(np.float32), err_msg=name)
        else:
            expected = gguf.quants.dequantize(stored[name], qtype)
            proj = name.split(".")[-2]
            if proj in heads:
                expected = unpermute(expected, heads[proj])
            np.testing.assert_array_equal(got, expected, err_msg=name)
            rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
            assert rel < (0.01 if qtype == QT.Q8_0 else 0.15), (name, rel)


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_0], ids=lambda q: q.name)
def test_get_blocks_are_raw_rows_in_hf_order(tiny, qtype):
    path, cfg, weights, stored = tiny(qtype, False)
    src = GGUFSource(path)
    for name, n_head in (("model.layers.1.self_attn.q_proj.weight", cfg.num_attention_heads),
                         ("model.layers.1.self_attn.k_proj.weight", cfg.num_key_value_heads),
                         ("model.layers.0.mlp.down_proj.weight", None)):
        blocks = src.get_blocks(name)
        assert blocks.kind == qtype.name and blocks.shape == weights[name].shape
        assert blocks.data.dtype == np.uint8 and blocks.data.shape == stored[name].shape
        raw = stored[name] if n_head is None else unpermute(stored[name], n_head)
        np.testing.assert_array_equal(blocks.data, raw)
        np.testing.assert_array_equal(gguf.quants.dequantize(blocks.data, qtype), src.get(name))
    assert src.get_blocks("model.norm.weight") is None
    assert GGUFSource(tiny(QT.F16, False)[0]).get_blocks("model.layers.0.self_attn.q_proj.weight") is None


def test_tied_and_untied_embeddings(tiny):
    tied = GGUFSource(tiny(QT.F32, True)[0])
    assert tied.config["tie_word_embeddings"] and "lm_head.weight" not in tied.names()
    _, _, weights, _ = tiny(QT.F32, False)
    untied = GGUFSource(tiny(QT.F32, False)[0])
    assert not untied.config["tie_word_embeddings"]
    np.testing.assert_array_equal(untied.get("lm_head.weight"), weights["lm_head.weight"])
    with pytest.raises(SourceError, match="lm_head.weight"):
        tied.get("lm_head.weight")


def test_byte_level_tokenizer_matches_the_trained_one(tiny, bpe):
    files = GGUFSource(tiny(QT.F32, True)[0]).tokenizer_files()
    ours = Tokenizer.from_str(json.dumps(files.files["tokenizer.json"]))
    for text in ["hello world", "the lazy dog jumps 2024", "café ☕ naïve", "<|im_start|>user\nhi<|im_end|>\n"]:
        assert ours.encode(text).ids == bpe.encode(text).ids, text
        assert ours.decode(ours.encode(text).ids, skip_special_tokens=False) == text
    config = files.files["tokenizer_config.json"]
    assert config["bos_token"] == "<|im_start|>" and config["eos_token"] == "<|im_end|>"
    assert config["add_bos_token"] is False and config["chat_template"] == CHAT_TEMPLATE == files.chat_template
    assert files.files["special_tokens_map.json"] == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}


def test_sentencepiece_tokenizer_matches_transformers(tmp_path):
    spm = Tokenizer(models.BPE())
    spm.pre_tokenizer = pre_tokenizers.Metaspace()
    spm.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=80, show_progress=False))
    vocab = spm.get_vocab()
    pieces = sorted(vocab, key=vocab.get)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]

    def metadata(w):
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_scores(scores)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)

    cfg, weights = tiny_llama(len(tokens), True)
    write_llama(tmp_path / "spm.gguf", cfg, weights, QT.F32, tokenizer=metadata)
    files = GGUFSource(tmp_path / "spm.gguf").tokenizer_files()
    ours = Tokenizer.from_str(json.dumps(files.files["tokenizer.json"]))
    ref = AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    for text in ["hello world", " the  quick fox", "café ☕ naïve 😀", "line\nbreak"]:
        assert ours.encode(text).ids == ref(text).input_ids, text
        ids = ref(text).input_ids
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True), text
    assert files.files["tokenizer_config.json"]["add_bos_token"] is True


def llama3_divisors(theta, head_dim, factor, low, high, old) -> np.ndarray:
    """llama.cpp `LlamaModel.generate_extra_tensors`: the `rope_freqs` tensor for llama3 rope scaling."""
    divisors = []
    for freq in 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim):
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            divisors.append(1.0)
        elif wavelen > old / low:
            divisors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            divisors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(divisors, np.float32)


def test_llama3_rope_scaling_from_rope_freqs(tmp_path, bpe):
    got = llama3_rope_scaling(llama3_divisors(500000.0, 64, 8.0, 1.0, 4.0, 8192), 500000.0, 64, 8192)
    assert got == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}
    assert llama3_rope_scaling(np.ones(32, np.float32), 500000.0, 64, 8192) is None
    cfg, weights = tiny_llama(bpe.get_vocab_size(), True)  # head_dim 16, theta 50000
    divisors = llama3_divisors(50000.0, 16, 16.0, 1.0, 32.0, 8192)
    write_llama(tmp_path / "l3.gguf", cfg, weights, QT.F32, extra_tensors=[("rope_freqs.weight", divisors, None)])
    src = GGUFSource(tmp_path / "l3.gguf")
    assert src.config["rope_scaling"] == {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 32.0, "original_max_position_embeddings": 8192}
    assert "rope_freqs.weight" not in src.names()


def test_bad_files_raise_source_error(tiny, tmp_path):
    good = tiny(QT.Q8_0, True)[0].read_bytes()
    for name, data in (("truncated.gguf", good[: len(good) // 2]), ("header.gguf", good[:200]),
                       ("random.gguf", np.random.default_rng(0).bytes(4096)), ("empty.gguf", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError, match=name):
            GGUFSource(tmp_path / name)
    with pytest.raises(SourceError, match="not found"):
        GGUFSource(tmp_path / "missing.gguf")


def test_unsupported_architecture_and_block_type(tmp_path, bpe):
    cfg, weights = tiny_llama(bpe.get_vocab_size(), True)
    write_llama(tmp_path / "mamba.gguf", cfg, weights, QT.F32, arch="mamba")
    with pytest.raises(SourceError, match=r"'mamba'.*supported: llama"):
        GGUFSource(tmp_path / "mamba.gguf")
    q81 = np.zeros((8, 2 * gguf.GGML_QUANT_SIZES[QT.Q8_1][1]), np.uint8)  # [8, 64] in Q8_1 blocks
    write_llama(tmp_path / "q81.gguf", cfg, weights, QT.F32, extra_tensors=[("blk.9.ffn_up.weight", q81, QT.Q8_1)])
    with pytest.raises(SourceError, match=r"blk\.9\.ffn_up\.weight.*Q8_1"):
        GGUFSource(tmp_path / "q81.gguf")


# -- the real model -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol(smollm_gguf) -> Path:
    return smollm_gguf


@pytest.fixture(scope="module")
def smol_source(smol) -> GGUFSource:
    return GGUFSource(smol)


def test_smollm2_config(smol_source):
    c = smol_source.config
    shape = (c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"], c["hidden_size"])
    assert shape == (30, 9, 3, 576)
    assert c["tie_word_embeddings"] and c["head_dim"] == 64 and c["vocab_size"] == 49152
    assert c["rms_norm_eps"] == 1e-5 and c["rope_theta"] == 100000.0 and c["max_position_embeddings"] == 8192


def test_smollm2_tokenizer_matches_transformers(smol, smol_source, tmp_path):
    files = smol_source.tokenizer_files()
    ours = Tokenizer.from_str(json.dumps(files.files["tokenizer.json"]))
    ref = AutoTokenizer.from_pretrained(smol.parent, gguf_file=smol.name)
    texts = ["Hello, world! How are you today?",
             "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
             "<|im_start|>assistant\n",
             "naïve café — 日本語のテキスト 🤗 Ünïcödé",
             "In 2024, pi was 3.14159 and    spaces\n\n\ttabs"]
    for text in texts:
        assert ours.encode(text).ids == ref(text).input_ids, text
        assert ours.decode(ours.encode(text).ids, skip_special_tokens=False) == text
    assert ours.encode("2024").tokens == ["2", "0", "2", "4"]  # llama.cpp's "smollm" pre-tokenizer splits digits
    assert files.chat_template == ref.chat_template
    config = files.files["tokenizer_config.json"]
    assert (config["bos_token"], config["eos_token"], config["add_bos_token"]) == (ref.bos_token, ref.eos_token, False)
    for name, content in files.files.items():  # the written folder loads as a plain fast tokenizer
        (tmp_path / name).write_text(json.dumps(content))
    saved = AutoTokenizer.from_pretrained(tmp_path)
    chat = [{"role": "user", "content": "Hi there"}]
    assert saved(texts[1]).input_ids == ref(texts[1]).input_ids
    assert saved.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == \
        ref.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)


def test_smollm2_weights_match_transformers(smol, smol_source):
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    src = smol_source
    assert src.description.endswith("(Q4_1)")
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**src.config))
    ref = load_gguf_checkpoint(str(smol), return_tensors=True, model_to_load=model)["tensors"]
    assert set(ref) == set(src.names())
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                 "model.layers.29.mlp.down_proj.weight"):
        np.testing.assert_allclose(src.get(name), ref[name].float().numpy(), rtol=0, atol=1e-6, err_msg=name)
    blocks = src.get_blocks("model.embed_tokens.weight")  # the one Q8_0 tensor
    assert blocks.kind == "Q8_0" and blocks.shape == (49152, 576)
    assert src.tensor_format("model.embed_tokens.weight") == "Q8_0"
    blocks = src.get_blocks("model.layers.0.self_attn.q_proj.weight")  # the others are Q4_1
    assert blocks.kind == "Q4_1" and blocks.shape == (576, 576)
    assert src.tensor_format("model.norm.weight") == "F32" and src.get_blocks("model.norm.weight") is None
