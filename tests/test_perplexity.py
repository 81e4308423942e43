"""llm_runtime.evaluation.perplexity and `llm-runtime perplexity`: windows, the reductions, and the whole command on tiny models
against a direct torch computation of the same windows (transformers' logits, torch's cross entropy and KL)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from graph_driver import PlainDecoder
from transformers import AutoModelForCausalLM

from llm_runtime.cli.main import main
from llm_runtime.evaluation.perplexity import (
    LogitsModel,
    Report,
    evaluate,
    kl_divergence,
    llama_cpp_windows,
    log_softmax,
    token_nll,
    windows,
)

TEXT = ("Once upon a time there was a tiny model that wanted to be exact. The quick brown fox jumps over the lazy "
        "dog. ") * 6


@pytest.mark.parametrize("n,context,stride", [(10, 4, 4), (10, 4, 2), (10, 4, 1), (3, 8, 8), (100, 16, 5),
                                              (17, 16, 16)])
def test_windows_score_every_token_but_the_first_once(n, context, stride):
    ws = windows(n, context, stride)
    scored = [t for w in ws for t in range(w.scored, w.end)]
    assert scored == list(range(1, n))
    for prev, w in zip(ws, ws[1:]):
        assert w.begin < w.scored and w.end - w.begin <= context
        assert w.begin <= prev.begin + stride  # a stride apart, or less where the end forces it
        assert w.scored - w.begin >= max(context - stride, 1)  # each scored token sees this much before it
    assert ws[-1].end == n and all(w.end - w.begin == min(context, n) for w in ws)


def test_windows_refuse_bad_arguments():
    for args in [(10, 1, 1), (10, 4, 0), (10, 4, 5), (1, 4, 4)]:
        with pytest.raises(ValueError):
            windows(*args)


def test_llama_cpp_windows_are_llama_perplexitys_chunks():
    """llama-perplexity (tools/perplexity): n_chunk = n_tokens / n_ctx whole chunks, first = n_ctx / 2, and the
    logits of positions first .. n_ctx - 2 score tokens first + 1 .. n_ctx - 1 of each chunk."""
    ws = llama_cpp_windows(1561, 512)
    assert [(w.begin, w.end, w.scored) for w in ws] == [(0, 512, 257), (512, 1024, 769), (1024, 1536, 1281)]
    assert sum(w.end - w.scored for w in ws) == 3 * 255  # what llama-perplexity scores on 1,561 tokens
    for args in [(100, 3), (10, 16)]:
        with pytest.raises(ValueError):
            llama_cpp_windows(*args)


def test_reductions_on_small_arrays():
    logits = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    p = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.exp(log_softmax(logits)), p, rtol=1e-12)
    np.testing.assert_allclose(token_nll(logits, np.array([3, 1])), [-math.log(p[0, 3]), math.log(4)], rtol=1e-12)
    ref = np.array([[4.0, 3.0, 2.0, 1.0], [0.0, 1.0, 0.0, 0.0]], np.float32)
    q = np.exp(log_softmax(ref))
    np.testing.assert_allclose(kl_divergence(ref, logits), (q * (np.log(q) - np.log(p))).sum(-1), rtol=1e-10)
    np.testing.assert_array_equal(kl_divergence(logits, logits), [0.0, 0.0])


def torch_windows(hf_folder, tokens: list[int], spans) -> np.ndarray:
    """NLL of every scored token, computed directly: transformers' logits of each window, torch's cross entropy."""
    model = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for w in spans:
            ids = torch.tensor([tokens[w.begin:w.end]])
            logits = model(ids).logits[0].double()
            first = w.scored - w.begin - 1
            out.append(torch.nn.functional.cross_entropy(logits[first:-1], ids[0, first + 1:], reduction="none"))
    return torch.cat(out).numpy()


@pytest.mark.parametrize("context,stride", [(32, 32), (32, 12), (32, "llama.cpp")])
def test_perplexity_matches_a_direct_torch_computation(tiny_hf, tiny_build, context, stride):
    model = LogitsModel(tiny_build("llama-gqa2"), threads=1)
    tokens = model.tokenize(TEXT)
    assert len(tokens) > 3 * context
    spans = llama_cpp_windows(len(tokens), context) if stride == "llama.cpp" else windows(len(tokens), context, stride)
    nll = torch_windows(tiny_hf("llama-gqa2"), tokens, spans)
    report = evaluate(model, tokens, spans, progress=False)
    scored = (len(tokens) // context) * (context // 2 - 1) if stride == "llama.cpp" else len(tokens) - 1
    assert report.tokens == scored == len(nll)
    assert report.perplexity == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert report.perplexity_se == pytest.approx(math.exp(nll.mean()) * nll.std(ddof=1) / math.sqrt(len(nll)),
                                                 rel=1e-4)
    assert report.kl_mean is None


def test_kl_mode_matches_a_direct_computation(tiny_build):
    """int4 build against the fp32 build: KL, its 99th percentile and top-1 agreement from each window's full
    logits run through PlainDecoder (no runner, no cache) and torch's kl_div. Round-to-nearest with a 4-bit
    lm_head, so that int4 is measurably worse than fp32 on this tiny random model (the default's searched grid
    and 8-bit table measured a ratio of 0.987 +/- 0.010 here: no difference to measure)."""
    fp32, int4 = tiny_build("llama-gqa2"), tiny_build("llama-gqa2", "int4", quantizer="rtn", lm_head_bits=4)
    model, ref = LogitsModel(int4, threads=1), LogitsModel(fp32, threads=1)
    tokens = model.tokenize(TEXT)
    report = evaluate(model, tokens, windows(len(tokens), 24, 24), reference=ref, progress=False)
    kls, same, nll_ref = [], [], []
    for w in windows(len(tokens), 24, 24):
        ids = np.array([tokens[w.begin:w.end]])
        first = w.scored - w.begin - 1
        got, want = ((PlainDecoder(f).step(ids, np.ones_like(ids), PlainDecoder(f).empty_past(1))[0][0][first:-1])
                     for f in (int4, fp32))
        lp, lq = torch.log_softmax(torch.tensor(want).double(), -1), torch.log_softmax(torch.tensor(got).double(), -1)
        kls.append(torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="none").sum(-1).numpy())
        same.append(want.argmax(-1) == got.argmax(-1))
        nll_ref.append(-lp[torch.arange(len(lp)), torch.tensor(ids[0, first + 1:])].numpy())
    kl = np.concatenate(kls)
    assert 0 < report.kl_mean == pytest.approx(kl.mean(), rel=1e-3)
    assert report.kl_p99 == pytest.approx(np.percentile(kl, 99), rel=1e-3)
    assert report.top1 == pytest.approx(np.concatenate(same).mean(), abs=1.5 / len(kl))  # a near-tie may flip
    assert report.ref_perplexity == pytest.approx(math.exp(np.concatenate(nll_ref).mean()), rel=1e-5)
    assert report.ratio == pytest.approx(report.perplexity / report.ref_perplexity, rel=1e-9)
    assert 0 < report.ratio_se < report.ratio - 1  # int4 is measurably worse than fp32 on this tiny model
    same_model = evaluate(ref, tokens, windows(len(tokens), 24, 24), reference=ref, progress=False)
    assert same_model.kl_mean == 0 and same_model.top1 == 1 and same_model.perplexity == same_model.ref_perplexity
    assert same_model.ratio == 1 and same_model.ratio_se == 0


def test_report_lines():
    r = Report(10, 12.5, 0.5, 12.0, 0.01, 0.001, 0.05, 0.9, 1.0416667, 0.002)
    assert r.lines() == ["tokens scored: 10", "perplexity: 12.5000 +/- 0.5000", "reference perplexity: 12.0000",
                         "perplexity / reference: 1.041667 +/- 0.002000",
                         "KL divergence: mean 0.010000 +/- 0.001000, 99th percentile 0.050000",
                         "top-1 agreement: 90.00%"]


def test_command(tiny_build, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    fp32, int4 = str(tiny_build("llama-gqa2")), str(tiny_build("llama-gqa2", "int4"))
    out_json = tmp_path / "r.json"
    assert main(["perplexity", str(text), "--model", int4, "--reference", fp32, "--context", "24",
                 "--threads", "1", "--json", str(out_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    figures = json.loads(out_json.read_text())
    assert lines == Report(**figures).lines() and figures["kl_mean"] > 0
    assert main(["perplexity", str(text), "--model", fp32, "--context", "24", "--max-tokens", "30"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "tokens scored: 29"
    assert main(["perplexity", str(text), "--model", fp32, "--context", "24", "--llama-cpp"]) == 0
    n = len(LogitsModel(fp32).tokenize(TEXT))
    assert capsys.readouterr().out.splitlines()[0] == f"tokens scored: {(n // 24) * 11}"


@pytest.mark.parametrize("args,message", [
    (["--context", "1"], "--context must be >= 2"),
    (["--context", "8", "--stride", "9"], "--stride between 1 and --context"),
    (["--max-tokens", "1"], "--max-tokens must be >= 2"),
    (["--llama-cpp", "--stride", "4"], "give --context, not --stride"),
    (["--llama-cpp", "--context", "100000"], "need at least one chunk of 100000"),
])
def test_command_refuses_bad_arguments(tiny_build, tmp_path, capsys, args, message):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    assert main(["perplexity", str(text), "--model", str(tiny_build("llama-gqa2")), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_command_refuses_bad_files(tiny_build, tmp_path, capsys):
    model = str(tiny_build("llama-gqa2"))
    assert main(["perplexity", str(tmp_path / "missing.txt"), "--model", model]) == 2
    assert "missing.txt" in capsys.readouterr().err
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    assert main(["perplexity", str(binary), "--model", model]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
    one = tmp_path / "one.txt"
    one.write_text("a")
    assert main(["perplexity", str(one), "--model", model]) == 2
    assert "at least 2 are needed" in capsys.readouterr().err
