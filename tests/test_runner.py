"""ModelRunner + KVCache (shared buffer, IO binding) against the plain driver, single row and batched."""
import numpy as np
import pytest
from graph_driver import PlainDecoder

from llm_runtime.graph.providers import Provider
from llm_runtime.graph.runner import ModelRunner, Step, decode_inputs, prefill_inputs
from llm_runtime.graph.session import SessionConfig, make_session
from llm_runtime.kv_cache import KVCache
from llm_runtime.kv_cache.memory import DeviceMemory
from llm_runtime.models.folder import ModelFolder

CASE = "llama-gqa2"
A = [5, 17, 33, 100, 7, 250, 9, 11, 3, 42]
B = [8, 99, 4, 61, 200, 13, 77, 21]
ATOL = 1e-5


@pytest.fixture(scope="module")
def folder(tiny_build) -> ModelFolder:
    return ModelFolder.open(tiny_build(CASE))


@pytest.fixture(scope="module")
def session(folder):
    return make_session(folder.model_file, Provider.CPU, SessionConfig())


def new_cache(folder: ModelFolder, slots: int, capacity: int) -> KVCache:
    c = folder.contract
    return KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=slots, capacity=capacity,
                   max_capacity=folder.context_length)


def single_row(folder, session, prompt: list[int], tokens: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits of every prompt position [P, V], then of each decoded token, from a one-slot cache."""
    cache = new_cache(folder, 1, 16)
    runner = ModelRunner(folder, session)
    n = len(prompt)
    prefill = runner.run(Step(np.array([prompt]), np.array([n]), np.array([n]), np.arange(n)), cache).copy()
    decoded = [runner.run(decode_inputs(np.array([t]), np.array([n + i + 1])), cache)[0].copy()
               for i, t in enumerate(tokens)]
    return prefill, decoded


def test_greedy_matches_plain_decoder_while_the_cache_grows(folder, session):
    cache = new_cache(folder, 1, 16)  # 10 prompt tokens + 40 generated: grows mid-generation
    runner = ModelRunner(folder, session)
    logits = runner.run(prefill_inputs(A), cache)
    assert logits.shape == (1, folder.vocab_size)
    out, versions = [int(logits[-1].argmax())], {cache.version}
    for _ in range(39):
        logits = runner.run(decode_inputs(np.array([out[-1]]), np.array([len(A) + len(out)])), cache)
        out.append(int(logits[0].argmax()))
        versions.add(cache.version)
    assert out == PlainDecoder(folder.path).greedy(A, 40)
    assert len(versions) == 2 and cache.capacity == 256
    assert cache.lengths[0] == len(A) + 39


def test_one_decode_row_keeps_its_mask_bound_and_any_length_works(folder, session):
    """On the CPU a decode row's attention mask is [1, capacity], refilled in place and bound once; a step back
    to an earlier length (a rewind) refills it whole."""
    cache = new_cache(folder, 1, 64)
    runner = ModelRunner(folder, session)
    runner.run(prefill_inputs(A), cache)
    bound, bind = [], runner.binding.bind_input
    runner.binding.bind_input = lambda name, *rest: (bound.append(name), bind(name, *rest))
    first = [runner.run(decode_inputs(np.array([t]), np.array([len(A) + i + 1])), cache)[0].copy()
             for i, t in enumerate(B[:4])]
    assert bound.count(folder.contract.attention_mask) == 1  # the first decode step only
    again = runner.run(decode_inputs(np.array([B[0]]), np.array([len(A) + 1])), cache)[0]
    np.testing.assert_array_equal(again, first[0])


def test_device_memory_cache_binds_like_host_memory(folder, session):
    """The accelerator path (OrtValue buffers bound by data_ptr, growth staged through the host), run with
    onnxruntime's CPU device: same greedy tokens as the host cache, across a reallocation."""
    c = folder.contract
    cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=1, capacity=16,
                    max_capacity=folder.context_length, memory=DeviceMemory("cpu"))
    runner = ModelRunner(folder, session)
    out = [int(runner.run(prefill_inputs(A), cache)[-1].argmax())]
    for _ in range(29):
        step = decode_inputs(np.array([out[-1]]), np.array([len(A) + len(out)]))
        out.append(int(runner.run(step, cache)[0].argmax()))
    assert out == PlainDecoder(folder.path).greedy(A, 30)
    assert cache.version == 2 and cache.buffers[0].device_name() == "cpu"


def test_two_rows_match_single_rows(folder, session):
    tokens = {0: [1, 2, 3], 1: [4, 5, 6]}
    ref = {0: single_row(folder, session, A, tokens[0]), 1: single_row(folder, session, B, tokens[1])}
    cache = new_cache(folder, 2, 16)
    runner = ModelRunner(folder, session)
    assert [cache.allocate_slot(), cache.allocate_slot()] == [0, 1]
    width = len(A)  # B is right-padded to A's length
    ids = np.array([A, B + [0] * (width - len(B))])
    lens = np.array([len(A), len(B)])
    logits = runner.run(Step(ids, lens, lens, np.array([len(A) - 1, width + len(B) - 1])), cache)
    np.testing.assert_allclose(logits[0], ref[0][0][-1], atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits[1], ref[1][0][-1], atol=ATOL, rtol=0)
    assert cache.lengths.tolist() == lens.tolist()
    for i in range(3):  # both rows decode together, each at its own offset
        lens = lens + 1
        logits = runner.run(decode_inputs(np.array([tokens[0][i], tokens[1][i]]), lens), cache)
        assert logits.shape == (2, folder.vocab_size)
        for row in (0, 1):
            np.testing.assert_allclose(logits[row], ref[row][1][i], atol=ATOL, rtol=0)
    assert cache.lengths.tolist() == lens.tolist()


def test_a_call_on_a_later_slot_binds_only_that_slot(folder, session):
    """Row B prefills alone in slot 2 (bound at its offset), then both slots decode in one call."""
    ref_a, ref_b = single_row(folder, session, A, [1]), single_row(folder, session, B, [6])
    cache = new_cache(folder, 3, 16)
    runner = ModelRunner(folder, session)
    runner.run(prefill_inputs(A), cache)
    np.testing.assert_allclose(runner.run(prefill_inputs(B, slot=2), cache)[0], ref_b[0][-1], atol=ATOL, rtol=0)
    assert cache.lengths.tolist() == [len(A), 0, len(B)]
    step = Step(np.array([[1], [0], [6]]), np.array([len(A) + 1, 1, len(B) + 1]), np.array([1, 0, 1]), np.array([0, 2]))
    logits = runner.run(step, cache)
    np.testing.assert_allclose(logits[0], ref_a[1][0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits[1], ref_b[1][0], atol=ATOL, rtol=0)


def test_runner_sees_the_optional_inputs(folder, session):
    # graph inputs with a default initializer are listed by get_overridable_initializers(), not get_inputs()
    runner = ModelRunner(folder, session)
    assert runner.has_query_seqlens and runner.has_logits_indices


def test_mixed_decode_and_prefill_chunk_in_one_step(folder, session):
    """Row 0 decodes one token while row 1 prefills a chunk of 3 on top of its cache (GQA query_seqlens)."""
    ref0 = single_row(folder, session, A, [1, 2])
    ref1 = single_row(folder, session, B, [6])
    cache = new_cache(folder, 2, 16)
    runner = ModelRunner(folder, session)
    # row 0 alone into slot 0, then row 1's first 5 tokens into slot 1 with row 0 idle
    np.testing.assert_allclose(runner.run(prefill_inputs(A), cache)[0], ref0[0][-1], atol=ATOL, rtol=0)
    step = Step(np.array([[0] * 5, B[:5]]), np.array([len(A), 5]), np.array([0, 5]), np.array([9]))
    np.testing.assert_allclose(runner.run(step, cache)[0], ref1[0][4], atol=ATOL, rtol=0)
    assert cache.lengths.tolist() == [len(A), 5]
    # the mixed step: S=3, row 0 right-padded
    step = Step(np.array([[1, 0, 0], B[5:8]]), np.array([len(A) + 1, 8]), np.array([1, 3]), np.array([0, 3, 4, 5]))
    logits = runner.run(step, cache)
    np.testing.assert_allclose(logits[0], ref0[1][0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits[1:], ref1[0][5:8], atol=ATOL, rtol=0)
    assert cache.lengths.tolist() == [len(A) + 1, 8]
    # both caches hold the right tokens: one more decode on both rows
    logits = runner.run(decode_inputs(np.array([2, 6]), np.array([len(A) + 2, 9])), cache)
    np.testing.assert_allclose(logits[0], ref0[1][1], atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits[1], ref1[1][0], atol=ATOL, rtol=0)
