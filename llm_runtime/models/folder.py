"""A built model folder, ours or onnxruntime-genai's: graph contract, tokenizer, chat template, stop ids."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from llm_runtime.model_builder.contract import GraphContract
from llm_runtime.model_builder.recommended_sampling import recommended_sampling


class ModelFolderError(ValueError):
    """The folder is not a usable built model."""


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError as e:
        raise ModelFolderError(f"{path} is not valid JSON ({e})") from None


def _ids(v) -> list[int]:
    return [] if v is None else [int(x) for x in v] if isinstance(v, list) else [int(v)]


@dataclass
class ModelFolder:
    path: Path
    genai: dict
    contract: GraphContract
    tokenizer: Tokenizer
    tokenizer_config: dict
    chat_template: str | None
    eos_token_ids: list[int]
    context_length: int
    vocab_size: int
    manifest: dict
    sampling: dict  # the model's recommended sampling (generation_config.json; model_builder/recommended_sampling.py)

    @property
    def model_file(self) -> Path:
        return self.path / self.genai["model"]["decoder"].get("filename", "model.onnx")

    def special_token(self, key: str) -> str | None:
        tok = self.tokenizer_config.get(key)
        return tok.get("content") if isinstance(tok, dict) else tok

    @classmethod
    def open(cls, path: str | Path) -> "ModelFolder":
        path = Path(path)
        genai = _json(path / "genai_config.json")
        if not genai:
            raise ModelFolderError(f"{path} is not a built model folder (no genai_config.json)")
        if not (path / "tokenizer.json").exists():
            raise ModelFolderError(f"{path} has no tokenizer.json")
        manifest = _json(path / "llm_runtime.json")
        model = genai["model"]
        kv_dtype = manifest.get("io_dtype") or _kv_dtype_of(path / model["decoder"].get("filename", "model.onnx"))
        tok_cfg = _json(path / "tokenizer_config.json")
        template_file = path / "chat_template.jinja"
        template = template_file.read_text() if template_file.exists() else tok_cfg.get("chat_template")
        gen = _json(path / "generation_config.json")
        eos = sorted(set(_ids(model.get("eos_token_id")) + _ids(gen.get("eos_token_id"))))
        return cls(path=path, genai=genai, contract=GraphContract.from_genai_config(genai, kv_dtype, manifest.get("window_cache"),
                                                                                 manifest.get("lora")),
                   tokenizer=Tokenizer.from_file(str(path / "tokenizer.json")), tokenizer_config=tok_cfg,
                   chat_template=template, eos_token_ids=eos, context_length=int(model["context_length"]),
                   vocab_size=int(model["vocab_size"]), manifest=manifest,
                   sampling=recommended_sampling(gen))


def _kv_dtype_of(model_file: Path) -> str:
    """Read the past-key input's element type from the graph (folders built by other tools)."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    elem = next(i.type.tensor_type.elem_type for i in graph.input if "past" in i.name)
    return {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}[elem]
