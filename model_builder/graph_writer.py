"""A small ONNX graph writer that streams initializers to one external data file as they are made.

The ModelProto itself never holds weight bytes, so a build's peak memory is about one tensor,
not the whole model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 23
MS_DOMAIN = "com.microsoft"
_ALIGN = 4096  # page-aligned offsets let onnxruntime memory-map large tensors
_INLINE_BYTES = 1024  # tiny tensors stay inside the proto

DTYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
          np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
          np.dtype(np.uint8): TensorProto.UINT8}


class GraphWriter:
    """Collects nodes, inputs and outputs; writes initializers straight to `<data_name>`."""

    def __init__(self, out_dir: Path, data_name: str):
        self.data_name = data_name
        self._data = open(out_dir / data_name, "wb")
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._names: set[str] = set()

    def close(self) -> None:
        self._data.close()

    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add a weight; returns its name."""
        array = np.ascontiguousarray(array)
        if array.nbytes <= _INLINE_BYTES:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        offset = self._data.tell()
        if array.nbytes >= 1 << 20 and offset % _ALIGN:
            self._data.write(b"\0" * (_ALIGN - offset % _ALIGN))
            offset = self._data.tell()
        self._data.write(array.tobytes())
        t = TensorProto(name=name, data_type=DTYPES[array.dtype], dims=array.shape,
                        data_location=TensorProto.EXTERNAL)
        for k, v in (("location", self.data_name), ("offset", str(offset)), ("length", str(array.nbytes))):
            t.external_data.add(key=k, value=v)
        self.initializers.append(t)
        return name

    def constant(self, name: str, value) -> str:
        """A small constant tensor (shapes, axes, scalars) as an inline initializer."""
        return self.initializer(name, np.asarray(value))

    def node(self, op: str, inputs: list[str], outputs: list[str] | int, name: str,
             domain: str = "", **attrs) -> list[str]:
        """Add a node named hierarchically (`/model/layers.0/attn/GroupQueryAttention`); returns output names."""
        if isinstance(outputs, int):
            outputs = [f"{name}/output_{i}" for i in range(outputs)]
        assert name not in self._names, f"duplicate node name {name}"
        self._names.add(name)
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs))
        return outputs

    def op(self, op: str, inputs: list[str], name: str, domain: str = "", **attrs) -> str:
        """A node with one output; returns its name."""
        return self.node(op, inputs, 1, name, domain, **attrs)[0]

    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, elem_type: int, shape: list) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def save(self, path: Path, graph_name: str, metadata: dict[str, str]) -> None:
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                        helper.make_opsetid(MS_DOMAIN, 1)],
                                  producer_name="llm-runtime model_builder")
        model.ir_version = 10
        for k, v in metadata.items():
            model.metadata_props.add(key=k, value=v)
        self.close()
        onnx.save_model(model, str(path))
