"""The shared runner: every architecture case is built at fp32 and checked against transformers."""
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from arch_cases import CASES
from graph_driver import PlainDecoder

ATOL = 1e-4
PROMPT = [5, 17, 33, 100, 7, 250, 9, 11, 3, 42]


def reference(folder):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_prefill_and_cached_decode_match_transformers(case, tiny_hf, tiny_build):
    model, dec = reference(tiny_hf(case)), PlainDecoder(tiny_build(case))
    ids = np.array([PROMPT])
    with torch.no_grad():
        out = model(torch.from_numpy(ids), use_cache=True)
    logits, past = dec.step(ids, np.ones_like(ids), dec.empty_past(1))
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=ATOL, rtol=0)
    cache, seq = out.past_key_values, list(PROMPT)
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
    rows = [PROMPT, PROMPT[:4]]
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
    with torch.no_grad():
        ref = model.generate(torch.tensor([PROMPT]), max_new_tokens=32, do_sample=False, min_new_tokens=32,
                             eos_token_id=None, pad_token_id=0)[0, len(PROMPT):].tolist()
    assert dec.greedy(PROMPT, 32) == ref
