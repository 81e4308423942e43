"""onnxruntime-genai's `.onnx_adapter` files, read and written through onnxruntime's own `AdapterFormat`.

Such a file is a flat map of parameter name -> tensor that onnxruntime feeds to the model's inputs of the same
names. For LoRA, Olive (the tool that writes them: `olive convert-adapters`, and its ExtractAdapters pass on a
model with LoRA MatMuls) names each factor after the module and stores it as the MatMul's right-hand side, with
the scale folded into B:

    model.layers.0.self_attn.q_proj.lora_A.weight   [in, rank]    (PEFT's lora_A.weight transposed)
    model.layers.0.self_attn.q_proj.lora_B.weight   [rank, out]   (lora_B.weight transposed, times the scale)

A model built by onnxruntime-genai's builder names its modules `model.layers.0.attn.q_proj` (attention is `attn`,
not `self_attn`; the MLP's names are Hugging Face's), and its LoRA MatMuls' weights `...lora_A.MatMul.weight`
before ExtractAdapters renames them. All of these are read; `write_onnx_adapter` writes either naming.

ExtractAdapters gives every LoRA input of a model one symbolic rank, `lora_r`, and a rank-0 default: an adapter
for such a model must feed all of them at one rank, in the model's dtype. `lora_inputs` reads what a model takes,
and `write_onnx_adapter(..., pad_to=lora_inputs(model))` pads every factor with zeros to the adapter's largest rank
and writes zero factors for the modules it does not adapt, which changes no output.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import AdapterError
from ..model_builder.config import ModelConfig
from .lora import LoraAdapter, LoraPair
from .peft_folder import split_fused

NAME = re.compile(r"(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.MatMul)?\.weight")
GENAI_ATTN = re.compile(r"^(model\.layers\.\d+\.)attn\.")
HF_ATTN = re.compile(r"^(model\.layers\.\d+\.)self_attn\.")
NAMINGS = ("hf", "genai")  # Hugging Face module names (Olive's convert-adapters), or onnxruntime-genai builder's


def parameter_name(module: str, factor: str, naming: str = "hf") -> str:
    """The .onnx_adapter name of one factor ("A" or "B") of `module` (a Hugging Face module name)."""
    if naming not in NAMINGS:
        raise AdapterError(f"naming {naming!r} is not one of {', '.join(NAMINGS)}")
    if naming == "genai":
        module = HF_ATTN.sub(r"\1attn.", module)
    return f"{module}.lora_{factor}.weight"


def read_parameters(path: Path) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    if not Path(path).is_file():
        raise AdapterError(f"{path}: no such .onnx_adapter file")
    try:
        return {k: np.array(v.numpy()) for k, v in ort.AdapterFormat.read_adapter(str(path)).get_parameters().items()}
    except Exception as e:  # onnxruntime raises its own Fail / InvalidArgument on a bad file
        raise AdapterError(f"{path}: not a readable .onnx_adapter file ({type(e).__name__}: {e})") from None


def read_onnx_adapter(path: Path, name: str, config: ModelConfig | None = None) -> LoraAdapter:
    """An .onnx_adapter's LoRA factors as a LoraAdapter (their scale is already in B). `config` (the base's)
    splits fused modules (Phi-3's qkv_proj, gate_up_proj, as Olive writes them from a Phi-3 PEFT adapter)."""
    where = str(path)
    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, value in read_parameters(Path(path)).items():
        if ".quant." in key:
            raise AdapterError(f"{where}: parameter {key} is int4-quantized (Olive's --quantize_int4); only float "
                               "LoRA factors are read")
        m = NAME.fullmatch(key)
        if m is None:
            raise AdapterError(f"{where}: parameter {key} is not a LoRA factor ('<module>.lora_A.weight' or "
                               "'<module>.lora_B.weight')")
        if value.dtype not in (np.float32, np.float16) or value.ndim != 2:
            raise AdapterError(f"{where}: parameter {key} is {value.dtype} {list(value.shape)}; LoRA factors are "
                               "2-D float32 or float16")
        module = GENAI_ATTN.sub(r"\1self_attn.", m["module"])
        halves.setdefault(module, {})[m["factor"]] = value.astype(np.float32).T  # MatMul's [in, out] -> [out, in]
    pairs = {}
    for module, half in halves.items():
        if set(half) != {"A", "B"}:
            raise AdapterError(f"{where}: {module} has lora_{next(iter(half))} but not the other factor")
        a, b = half["A"], half["B"]
        if a.shape[0] != b.shape[1]:
            raise AdapterError(f"{where}: {module} has lora_A [{a.shape[1]}, {a.shape[0]}] and lora_B "
                               f"[{b.shape[1]}, {b.shape[0]}]: their ranks differ (expected [in, r] and [r, out])")
        pairs[module] = LoraPair(np.ascontiguousarray(a), np.ascontiguousarray(b))
    if not pairs:
        raise AdapterError(f"{where}: the .onnx_adapter holds no parameters")
    return LoraAdapter(name=name, pairs=split_fused(pairs, config, where), source=where)


def lora_inputs(model_path: Path) -> dict[str, tuple[int, int]]:
    """Hugging Face module name -> (in, out) of every LoRA input pair of an ONNX model (A [in, r], B [r, out])."""
    import onnx

    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception as e:  # onnx raises DecodeError, OSError... on a bad file
        raise AdapterError(f"{model_path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    shapes = {}
    for key, shape in dims.items():
        m, b = NAME.fullmatch(key), dims.get(key.replace(".lora_A.", ".lora_B."))
        if m and m["factor"] == "A" and len(shape) == 2 and b is not None and len(b) == 2:
            shapes[GENAI_ATTN.sub(r"\1self_attn.", m["module"])] = (shape[0], b[1])
    return shapes


def padded(adapter: LoraAdapter, shapes: Mapping[str, tuple[int, int]]) -> dict[str, LoraPair]:
    """Factors for every module of `shapes` at the adapter's largest rank: its own padded with zeros, zeros for the
    rest (x @ 0 adds nothing)."""
    extra = sorted(set(adapter.pairs) - set(shapes))
    if extra:
        raise AdapterError(f"adapter {adapter.name!r} adapts {extra[0]}, for which the model takes no LoRA input")
    r, out = adapter.rank, {}
    for module, (d_in, d_out) in shapes.items():
        a, b = np.zeros((r, d_in), np.float32), np.zeros((d_out, r), np.float32)
        if module in adapter.pairs:
            pair = adapter.pairs[module]
            if pair.a.shape[1] != d_in or pair.b.shape[0] != d_out:
                raise AdapterError(f"adapter {adapter.name!r}: {module} has in {pair.a.shape[1]} and out "
                                   f"{pair.b.shape[0]}; the model's LoRA inputs have in {d_in} and out {d_out}")
            a[: pair.rank], b[:, : pair.rank] = pair.a, pair.b
        out[module] = LoraPair(a, b)
    return out


def write_onnx_adapter(adapter: LoraAdapter, path: Path, naming: str = "hf", dtype=np.float32,
                       pad_to: Mapping[str, tuple[int, int]] | None = None) -> Path:
    """Write `adapter` as an .onnx_adapter: each factor as the MatMul's right-hand side ([in, r] and [r, out],
    scale in B), named for a model with Hugging Face module names ("hf") or onnxruntime-genai builder's ("genai").
    `pad_to` (module -> (in, out), as `lora_inputs` reads them) writes one rank for all of a model's LoRA inputs."""
    import onnxruntime as ort

    params = {}
    for module, pair in (adapter.pairs if pad_to is None else padded(adapter, pad_to)).items():
        for factor, value in (("A", pair.a), ("B", pair.b)):
            params[parameter_name(module, factor, naming)] = ort.OrtValue.ortvalue_from_numpy(
                np.ascontiguousarray(value.T, dtype=dtype))
    out = ort.AdapterFormat()
    out.set_parameters(params)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.export_adapter(str(path))
    return path
