"""The shared runner: every architecture case is built at fp32 and checked against transformers."""
import numpy as np
import pytest
import torch
from arch_cases import CASES, FORWARD_REFERENCE, PROMPT, prompt
from graph_driver import PlainDecoder
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from llm_runtime.model_builder.config import model_config
from llm_runtime.model_builder.rope import inverse_frequencies

ATOL = 1e-4


def reference(folder):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_prefill_and_cached_decode_match_transformers(case, tiny_hf, tiny_build):
    model, dec = reference(tiny_hf(case)), PlainDecoder(tiny_build(case))
    ids = np.array([prompt(case)[0]])
    with torch.no_grad():
        out = model(torch.from_numpy(ids), use_cache=True)
    logits, past = dec.step(ids, np.ones_like(ids), dec.empty_past(1))
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=ATOL, rtol=0)
    cache, seq = out.past_key_values, list(ids[0])
    for _ in range(5):  # decode through both caches, feeding transformers' greedy token
        token = int(out.logits[0, -1].argmax())
        seq.append(token)
        with torch.no_grad():
            out = model(torch.tensor([[token]]), past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits, past = dec.step(np.array([[token]]), np.ones((1, len(seq))), past)
        np.testing.assert_allclose(logits[0, -1], out.logits[0, -1].numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_right_padded_batch_of_two(case, tiny_hf, tiny_build):
    model, dec = reference(tiny_hf(case)), PlainDecoder(tiny_build(case))
    full, short = prompt(case)
    rows = [full, full[:short]]
    width = max(map(len, rows))
    ids = np.array([r + [0] * (width - len(r)) for r in rows])
    mask = np.array([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    logits, past = dec.step(ids, mask, dec.empty_past(2))
    nxt = []
    for b, r in enumerate(rows):
        with torch.no_grad():
            ref = model(torch.tensor([r])).logits[0].numpy()
        np.testing.assert_allclose(logits[b, :len(r)], ref, atol=ATOL, rtol=0)
        nxt.append(int(ref[-1].argmax()))
    # one decode step: each row's token lands at its own offset in the padded cache
    step_mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
    logits, _ = dec.step(np.array([[t] for t in nxt]), step_mask, past)
    for b, r in enumerate(rows):
        with torch.no_grad():
            ref = model(torch.tensor([r + [nxt[b]]])).logits[0, -1].numpy()
        np.testing.assert_allclose(logits[b, -1], ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", ["llama-gqa2", "llama-gqa4-tied"])
def test_logits_indices_select_positions(case, tiny_build):
    dec = PlainDecoder(tiny_build(case))
    ids = np.array([PROMPT, PROMPT[::-1]])
    full, _ = dec.step(ids, np.ones_like(ids), dec.empty_past(2))
    picked, _ = dec.step(ids, np.ones_like(ids), dec.empty_past(2),
                         logits_indices=np.array([len(PROMPT) - 1, 2 * len(PROMPT) - 1]))
    assert picked.shape == (1, 2, full.shape[-1])
    np.testing.assert_allclose(picked[0], full[:, -1], atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_greedy_32_tokens_match_transformers(case, tiny_hf, tiny_build):
    model, dec = reference(tiny_hf(case)), PlainDecoder(tiny_build(case))
    ids = prompt(case)[0]
    assert dec.greedy(ids, 32) == transformers_greedy(model, case, ids, 32)


WINDOW_CASES = ["qwen2-tied-window", "mistral-window", "phi3-window", "gemma2-window", "gemma3-pattern2"]


@pytest.mark.parametrize("case", WINDOW_CASES)
def test_window_sized_caches_through_eviction(case, tiny_hf, tiny_build):
    """Sliding layers keep window + slack rows; 140 tokens overflow them twice, and tokens still match."""
    from llm_runtime import LLM, SamplingParams

    folder = tiny_build(case)
    dec, llm = PlainDecoder(folder), LLM(folder)
    assert dec.window_rows and llm.folder.contract.window_cache
    ids, steps = prompt(case)[0], 120
    want = transformers_greedy(reference(tiny_hf(case)), case, ids, steps)
    assert dec.greedy(ids, steps) == want
    chunks = llm.stream_ids(ids, SamplingParams(max_tokens=steps, temperature=0, ignore_eos=True))
    assert [t for c in chunks for t in c.token_ids] == want
    for layer, _ in llm.folder.contract.window_cache:
        assert llm.cache.key(layer).shape[2] == dec.window_rows[layer] < len(ids) + steps


@torch.no_grad()
def transformers_greedy(model, case: str, ids: list[int], steps: int) -> list[int]:
    """`generate`'s greedy tokens, or for FORWARD_REFERENCE cases its forward, one token per call on its cache."""
    if case not in FORWARD_REFERENCE:
        return model.generate(torch.tensor([ids]), max_new_tokens=steps, do_sample=False, min_new_tokens=steps,
                              eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    out = model(torch.tensor([ids]), use_cache=True)
    tokens = [int(out.logits[0, -1].argmax())]
    for _ in range(steps - 1):
        out = model(torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
        tokens.append(int(out.logits[0, -1].argmax()))
    return tokens


# config.json as transformers 4.x wrote the released checkpoints (shapes shrunk): legacy keys, no layer_types
SIZES = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=4096, pad_token_id=0)
LEGACY = {
    "qwen2.5": dict(SIZES, model_type="qwen2", num_hidden_layers=4, rope_theta=1e6, use_sliding_window=False,
                    sliding_window=131072, max_window_layers=21),
    "qwen2-window": dict(SIZES, model_type="qwen2", num_hidden_layers=4, use_sliding_window=True,
                         sliding_window=64, max_window_layers=2),
    "phi3.5-mini": dict(SIZES, model_type="phi3", num_hidden_layers=2, max_position_embeddings=131072,
                        original_max_position_embeddings=4096, sliding_window=262144, rope_theta=10000.0,
                        rope_scaling={"type": "longrope", "short_factor": [1.0 + k / 8 for k in range(8)],
                                      "long_factor": [1.5 + k for k in range(8)]}),
    "phi4-mini": dict(SIZES, model_type="phi3", num_hidden_layers=2, max_position_embeddings=131072,
                      original_max_position_embeddings=4096, partial_rotary_factor=0.5, rope_theta=10000.0,
                      rope_scaling={"type": "longrope", "short_factor": [1.0] * 4,
                                    "long_factor": [1.0 + k for k in range(4)]}),
    "gemma": dict(SIZES, model_type="gemma", num_hidden_layers=2, head_dim=16, hidden_act="gelu"),
    "gemma3-4b": dict(SIZES, model_type="gemma3_text", num_hidden_layers=12, head_dim=16, rope_theta=1e6,
                      rope_local_base_freq=10000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
                      sliding_window=1024, sliding_window_pattern=6, query_pre_attn_scalar=256),
}


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_checkpoint_configs_resolve_as_transformers_does(name):
    """Windows per layer, activation and rotary frequencies (both LongRoPE sets) against transformers' model."""
    cfg, hf = model_config(LEGACY[name]), AutoConfig.for_model(**LEGACY[name])
    window = getattr(hf, "sliding_window", None)
    types = getattr(hf, "layer_types", None) or ["sliding_attention" if window else "full_attention"] * cfg.num_layers
    assert [cfg.window(i) for i in range(cfg.num_layers)] == [window if t == "sliding_attention" else None
                                                               for t in types]
    act = getattr(hf, "hidden_activation", None) or hf.hidden_act
    assert cfg.hidden_act == {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh"}[act]
    rotary = AutoModelForCausalLM.from_config(hf).model.rotary_emb
    for i, layer_type in enumerate(types):
        rope = cfg.rope_local if cfg.layer_rope(i) == "sliding_attention" else cfg.rope
        prefix = f"{layer_type}_" if hasattr(rotary, f"{layer_type}_inv_freq") else ""
        inv, scaling = getattr(rotary, f"{prefix}inv_freq"), getattr(rotary, f"{prefix}attention_scaling")
        np.testing.assert_allclose(inverse_frequencies(rope, cfg.head_dim, cfg.max_positions), inv.numpy(), rtol=1e-6)
        assert rope.attention_factor == pytest.approx(scaling)
        if rope.kind == "longrope":
            long, _ = ROPE_INIT_FUNCTIONS["longrope"](hf, None, seq_len=rope.original_max_positions + 1)
            np.testing.assert_allclose(inverse_frequencies(rope, cfg.head_dim, cfg.max_positions, long=True),
                                       long.numpy(), rtol=1e-6)
