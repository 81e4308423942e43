"""Predicted Outputs end to end: the same replies with a prediction as without (greedy: the same tokens; sampled:
the same distribution), usage's prediction counts, the request mapping, and the server through the openai client."""
import numpy as np
import openai
import pytest
from server_process import serving
from test_speculator import chi2_two_sample_pvalue

from llm_runtime import LLM, SamplingParams
from llm_runtime.engine import EngineConfig
from llm_runtime.errors import ParameterError
from llm_runtime.openai.request import parse_request

FUNCTION = '''def summarize(orders, tax_rate=0.2):
    """Totals per customer, with tax, of a list of orders."""
    totals = {}
    for order in orders:
        customer = order["customer"]
        amount = order["quantity"] * order["price"]
        if order.get("discount"):
            amount = amount * (1 - order["discount"])
        totals[customer] = totals.get(customer, 0) + amount
    report = []
    for customer, amount in sorted(totals.items()):
        tax = amount * tax_rate
        report.append({
            "customer": customer,
            "net": round(amount, 2),
            "tax": round(tax, 2),
            "gross": round(amount + tax, 2),
        })
    best = None
    for row in report:
        if best is None or row["gross"] > best["gross"]:
            best = row
    count = len(report)
    if count == 0:
        return {"rows": [], "best": None, "mean": 0.0}
    mean = sum(row["gross"] for row in report) / count
    small = [row for row in report if row["gross"] < mean]
    large = [row for row in report if row["gross"] >= mean]
    return {
        "rows": report,
        "best": best,
        "mean": round(mean, 2),
        "small": len(small),
        "large": len(large),
        "customers": sorted(totals),
        "tax_rate": tax_rate,
        "orders": len(orders),
        "empty": not orders,
        "version": 1,
    }
'''
EDIT = [{"role": "user", "content": "Rename the variable `totals` to `per_customer` in this function. Reply with "
                                    "the whole function in a Python code block.\n\n" + FUNCTION}]
GREEDY = {"max_tokens": 160, "temperature": 0}


@pytest.fixture(scope="module")
def smol_llm(smollm_build):
    """The default model at fp32: batch-invariant to the bit, so a verification call's logits are a decode's (the
    int4 build's one-row and multi-row kernels round differently and part on near-ties: docs/quantization.md)."""
    return LLM(smollm_build("fp32"))


def test_a_code_edit_with_its_original_as_prediction_gives_the_same_tokens(smol_llm):
    """The default model, no --speculation: the prediction alone drafts, and the reply is token for token the same."""
    plain = smol_llm.chat(EDIT, SamplingParams(**GREEDY))
    before = smol_llm.engine.stats()
    predicted = smol_llm.chat(EDIT, SamplingParams(**GREEDY, prediction=FUNCTION))
    after = smol_llm.engine.stats()
    assert predicted.token_ids == plain.token_ids
    u = predicted.usage
    assert u.accepted_prediction_tokens > 0  # the model copies lines of the function
    assert u.accepted_prediction_tokens + u.rejected_prediction_tokens == after.draft_tokens - before.draft_tokens
    assert (plain.usage.accepted_prediction_tokens, plain.usage.rejected_prediction_tokens) == (0, 0)


def test_a_prediction_of_the_reply_itself_is_mostly_accepted(smol_llm):
    plain = smol_llm.chat(EDIT, SamplingParams(**GREEDY))
    predicted = smol_llm.chat(EDIT, SamplingParams(**GREEDY, prediction=plain.text))
    assert predicted.token_ids == plain.token_ids
    u = predicted.usage
    assert u.accepted_prediction_tokens >= len(plain.token_ids) * 3 // 4
    assert u.rejected_prediction_tokens <= len(plain.token_ids) // 4


def test_sampled_replies_keep_their_distribution_with_a_prediction(tiny_build, tiny_llm):
    """600 seeded requests each at temperature 1, top_k 4, predicting the greedy reply (accepted when the draw equals
    it): tokens 2 to 4 with a prediction against without it, by a two-sample chi-squared test."""
    prompt = "Once upon a time"
    guess = tiny_llm.generate(prompt, SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)).text
    alone = LLM(tiny_build("llama-gqa2"), engine=EngineConfig(max_concurrency=1))  # batch 1: drafts pay
    n, vocab = 600, tiny_llm.folder.vocab_size

    def tokens(llm: LLM, seeds: range, prediction: str | None) -> tuple[np.ndarray, list]:
        params = [SamplingParams(max_tokens=5, temperature=1.0, top_k=4, seed=s, ignore_eos=True,
                                 prediction=prediction) for s in seeds]
        results = [h.result() for h in [llm.submit(llm.encode(prompt), p) for p in params]]
        return np.array([r.token_ids for r in results]), [r.usage for r in results]

    with_prediction, usages = tokens(alone, range(n), guess)
    without, _ = tokens(tiny_llm, range(1000, 1000 + n), None)
    assert sum(u.accepted_prediction_tokens for u in usages) > 0 and sum(u.rejected_prediction_tokens for u in usages)
    for position in (1, 2, 3):
        a, b = (np.bincount(t[:, position], minlength=vocab) for t in (with_prediction, without))
        assert chi2_two_sample_pvalue(a, b) > 1e-3, position


def test_the_request_mapping_takes_text_or_text_parts_and_refuses_what_openai_refuses():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    text = {"type": "content", "content": "a = 1\n"}
    parts = {"type": "content", "content": [{"type": "text", "text": "a = "}, {"type": "text", "text": "1\n"}]}
    assert parse_request({**body, "prediction": text}, "chat").params.prediction == "a = 1\n"
    assert parse_request({**body, "prediction": parts}, "chat").params.prediction == "a = 1\n"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    for extra, param in (({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"tools": [tool]}, "tools"),
                         ({"presence_penalty": 0.5}, "presence_penalty"), ({"frequency_penalty": 1}, "frequency_penalty"),
                         ({"prediction": {"type": "text", "content": "x"}}, "prediction"),
                         ({"prediction": {"type": "content", "content": [{"type": "image_url"}]}}, "prediction.content")):
        with pytest.raises(ParameterError) as e:
            parse_request({"prediction": text, **body, **extra}, "chat")
        assert e.value.param == param
    with pytest.raises(ParameterError, match="Unrecognized request argument"):
        parse_request({"model": "m", "prompt": "hi", "prediction": text}, "completions")  # chat only, as OpenAI's


def test_the_openai_client_gets_usage_details_through_a_real_server(tiny_build, tiny_llm):
    folder = tiny_build("llama-gqa2")
    msgs = [{"role": "user", "content": "Repeat after me: one two three four five six"}]
    reply = tiny_llm.chat(msgs, SamplingParams(max_tokens=24, temperature=0))
    prediction = {"type": "content", "content": reply.text}
    with serving(folder, "--served-model-name", "tiny") as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=24, temperature=0,
                                           prediction=prediction)
        assert r.choices[0].message.content == reply.text
        details = r.usage.completion_tokens_details
        assert details.accepted_prediction_tokens > 0 and details.rejected_prediction_tokens >= 0
        chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=24, temperature=0,
                                                     prediction=prediction, stream=True,
                                                     stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.text
        assert chunks[-1].usage.completion_tokens_details == details
        with pytest.raises(openai.BadRequestError, match="not supported with predicted outputs"):
            client.chat.completions.create(model="tiny", messages=msgs, n=2, prediction=prediction)
        with pytest.raises(openai.BadRequestError, match="tools"):
            client.chat.completions.create(model="tiny", messages=msgs, prediction=prediction, tools=[
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
