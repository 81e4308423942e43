"""onnxruntime's warning about the optional inputs' default initializers is dropped, and nothing else is."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from llm_runtime.graph.load_warnings import without_default_input_warnings
from llm_runtime.graph.providers import Provider
from llm_runtime.graph.session import SessionConfig, make_session


def graph_with_defaults(*names: str) -> bytes:
    """y = x + each input, every input but x with a default initializer (what onnxruntime warns about)."""
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [1])
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, [1]) for n in names]
    defaults = [numpy_helper.from_array(np.array([1], np.int64), n) for n in names]
    nodes, last = [], "x"
    for i, n in enumerate(names):
        nodes.append(helper.make_node("Add", [last, n], [f"sum{i}"]))
        last = f"sum{i}"
    graph = helper.make_graph(nodes + [helper.make_node("Identity", [last], ["y"])], "g", [x, *inputs],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [1])], defaults)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]).SerializeToString()


def test_onnxruntime_warns_about_default_inputs(capfd):
    """The reason for the filter: the warning is real (if onnxruntime stops printing it, the filter can go)."""
    ort.InferenceSession(graph_with_defaults("query_seqlens", "logits_indices"))
    err = capfd.readouterr().err
    assert "Initializer query_seqlens appears in graph inputs" in err
    assert "Initializer logits_indices appears in graph inputs" in err


def test_only_the_optional_inputs_warning_is_dropped(capfd):
    with without_default_input_warnings():
        os.write(2, b"before\n")  # what a C++ library writes to stderr, as onnxruntime's logger does
        session = ort.InferenceSession(graph_with_defaults("query_seqlens", "logits_indices", "other_default"))
        os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "query_seqlens" not in err and "logits_indices" not in err
    assert "Initializer other_default appears in graph inputs" in err  # another graph's warning still shows
    assert err.index("before") < err.index("other_default") < err.index("after")
    assert session.run(None, {"x": np.array([5])})[0].tolist() == [8]
    os.write(2, b"stderr is back\n")
    assert capfd.readouterr().err == "stderr is back\n"


def test_a_built_model_loads_without_warnings(capfd, tiny_build):
    folder = tiny_build("llama-gqa2")
    capfd.readouterr()
    session = make_session(folder / "model.onnx", Provider.CPU, SessionConfig())
    assert {i.name for i in session.get_overridable_initializers()} == {"query_seqlens", "logits_indices"}
    assert capfd.readouterr().err == ""
