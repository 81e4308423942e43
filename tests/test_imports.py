"""The layers point one way (builder -> graph contract <- runtime <- doors) and no module hides an import cycle.

The layering is read statically from every import statement, those inside functions and `TYPE_CHECKING`
blocks included; the cycle check imports each module first in a fresh process.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Every package of ours, by layer: a module imports only from lower layers (and from its own package). The
# tree is the architecture: the builder at the bottom, then the cache and the shared types, the runtime's parts,
# the API's config, the API, and the doors (batch, Ray, the command line, the server) on top. `llm_runtime` itself only names the
# public types, loaded on first use.
LAYERS = {
    "llm_runtime.model_builder": 0,  # imports nothing of the runtime
    "llm_runtime.kv_cache": 1, "llm_runtime.errors": 1, "llm_runtime.completion": 1, "llm_runtime.prompts": 1,
    "llm_runtime.models": 2, "llm_runtime.adapters": 2, "llm_runtime.speculation": 2, "llm_runtime.structured": 2, "llm_runtime.chat": 2,
    "llm_runtime.graph": 3, "llm_runtime.sampling": 3,
    "llm_runtime.tools": 4, "llm_runtime.engine": 4,
    "llm_runtime.openai": 5, "llm_runtime.evaluation": 5, "llm_runtime.llm_config": 5,
    "llm_runtime.llm": 6, "llm_runtime.batch": 6,  # the API loads an LLMConfig; batch, the first of the doors
    "llm_runtime.ray": 7,
    "llm_runtime.cli": 8,
    "llm_runtime.server": 9,
}
HEAVY = ("onnxruntime", "fastapi", "uvicorn", "starlette", "torch", "transformers")


def package_dirs() -> dict[str, Path]:
    """Import name -> folder of every package pyproject.toml installs."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})
    return {name: ROOT / mapped.get(name, name.replace(".", "/")) for name in setuptools["packages"]}


def our_modules() -> dict[str, Path]:
    """Module name -> file, for every module of every installed package."""
    modules = {}
    for package, folder in package_dirs().items():
        for file in sorted(folder.glob("*.py")):
            modules[package if file.stem == "__init__" else f"{package}.{file.stem}"] = file
    return modules


MODULES = our_modules()


def imports_of(name: str, file: Path) -> list[tuple[str, bool]]:
    """(absolute module name, at module level) for every import statement in the file."""
    package = name if file.stem == "__init__" else name.rpartition(".")[0]
    tree = ast.parse(file.read_text(), str(file))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import x` may name a module; the root's names are the runtime's
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES or base == "llm_runtime" else base, id(node) in top))
    return found


def package_of(module: str) -> str:
    """The LAYERS entry a module belongs to (`llm_runtime.engine.engine` -> `llm_runtime.engine`)."""
    return ".".join(module.split(".")[:2])


def layer_violations() -> list[str]:
    bad = []
    for name, file in MODULES.items():
        if name == "llm_runtime":
            continue
        for target, _ in imports_of(name, file):
            if target.startswith("llm_runtime") and target != "llm_runtime" and package_of(target) != package_of(name):
                # a public name of the root (`from llm_runtime import LLM`) is the API's
                if LAYERS.get(package_of(target), LAYERS["llm_runtime.llm"]) >= LAYERS[package_of(name)]:
                    bad.append(f"{name} imports {target}")
    return sorted(set(bad))


def test_every_package_has_a_layer():
    assert {package_of(name) for name in MODULES if name != "llm_runtime"} == set(LAYERS)


def test_every_folder_of_code_is_installed():
    """pyproject.toml lists every folder that holds our modules, so the wheel misses none."""
    listed = set(package_dirs().values())
    folders = {f.parent for top in {*listed} for f in top.rglob("*.py") if "__pycache__" not in f.parts}
    assert folders <= listed


def test_layers_point_one_way():
    assert layer_violations() == []


def test_the_layering_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    """A lazy import from the builder into the runtime is caught like a top-level one."""
    file = tmp_path / "probe.py"
    file.write_text("def f():\n    from ..llm import LLM\n    from llm_runtime.server import app\n"
                    "    from llm_runtime import SamplingParams\n")
    monkeypatch.setitem(MODULES, "llm_runtime.model_builder.probe", file)
    assert layer_violations() == ["llm_runtime.model_builder.probe imports llm_runtime.SamplingParams",
                                  "llm_runtime.model_builder.probe imports llm_runtime.llm",
                                  "llm_runtime.model_builder.probe imports llm_runtime.server.app"]


def test_the_layering_check_sees_a_sideways_import(tmp_path, monkeypatch):
    """Two packages of one layer may not import each other: that is how a cycle between packages starts."""
    file = tmp_path / "probe.py"
    file.write_text("from llm_runtime.tools.tool import Tool\n")
    monkeypatch.setitem(MODULES, "llm_runtime.engine.probe", file)
    assert layer_violations() == ["llm_runtime.engine.probe imports llm_runtime.tools.tool"]


def fresh(loaded: list[str], alone: list[str], path: tuple[str, ...] = ()) -> dict:
    preload = sorted({target.split(".")[0] for name, file in MODULES.items() for target, top in imports_of(name, file)
                      if top and not target.startswith("llm_runtime") and target != "__future__"})
    request = {"loaded": loaded, "alone": alone, "preload": preload, "path": list(path)}
    out = subprocess.run([sys.executable, "-I", str(ROOT / "tests" / "fresh_imports.py"), json.dumps(request)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def report() -> dict:
    return fresh(["llm_runtime", "llm_runtime.model_builder.build", "llm_runtime.kv_cache", "llm_runtime.cli.main"],
                 sorted(MODULES))


def optional_packages() -> set[str]:
    """The distributions that only an optional extra other than `dev` installs (`ray`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda requirement: re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()
    required = {name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    extras = {name(r) for key, reqs in project["optional-dependencies"].items() if key != "dev" for r in reqs}
    return extras - required


def test_every_module_imports_alone(report):
    assert report["failed"] == {}
    # a module of an optional extra that is not installed here is skipped, and only those
    assert set(report["unavailable"].values()) <= optional_packages()


def test_the_cycle_check_fails_on_a_hidden_cycle(tmp_path):
    """a and b import names from each other: imported first, each fails; c, outside the cycle, imports."""
    (tmp_path / "cyc").mkdir()
    (tmp_path / "cyc" / "__init__.py").write_text("")
    (tmp_path / "cyc" / "a.py").write_text("from .b import B\nA = 1\n")
    (tmp_path / "cyc" / "b.py").write_text("from .a import A\nB = 2\n")
    (tmp_path / "cyc" / "c.py").write_text("C = 3\n")
    failed = fresh([], ["cyc.a", "cyc.b", "cyc.c"], (str(tmp_path),))["failed"]
    assert sorted(failed) == ["cyc.a", "cyc.b"] and "partially initialized" in failed["cyc.a"]


def test_the_builder_and_the_cache_load_no_runtime_and_no_server(report):
    builder, cache = report["loaded"]["llm_runtime.model_builder.build"], report["loaded"]["llm_runtime.kv_cache"]
    for modules in (builder, cache):
        ours = {m for m in modules if m.startswith("llm_runtime.")}
        assert ours <= {m for m in MODULES if m.startswith(("llm_runtime.model_builder", "llm_runtime.kv_cache"))}
        assert not [m for m in modules if m.split(".")[0] in HEAVY]
    assert "onnx" in builder  # the builder's own dependency, loaded for real
    root = report["loaded"]["llm_runtime"]  # LLM, SamplingParams, ... load on first use
    assert [m for m in root if m.startswith("llm_runtime")] == ["llm_runtime"] and "numpy" not in root


def test_the_command_line_imports_no_server_until_serve(report):
    cli = report["loaded"]["llm_runtime.cli.main"]
    assert [m for m in cli if m.startswith("llm_runtime")] == ["llm_runtime", "llm_runtime.cli", "llm_runtime.cli.main"]
    assert not [m for m in cli if m.split(".")[0] in HEAVY]  # `llm-runtime --help` loads no onnxruntime


def test_a_subcommand_loads_only_its_own_module():
    """Parsing `serve`'s flags loads server/cli.py, not the app, the runtime or fastapi; nor the other commands."""
    code = ("import json, sys; from llm_runtime.cli.main import parser; "
            "parser('serve').parse_args(['serve', '--port', '9']); print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert "llm_runtime.server.cli" in loaded
    assert not {"llm_runtime.server.app", "llm_runtime.llm", "llm_runtime.engine", "llm_runtime.cli.build",
                "llm_runtime.cli.generate"} & set(loaded)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def test_public_names_load_on_first_use():
    import llm_runtime
    from llm_runtime.llm import LLM

    assert llm_runtime.LLM is LLM and "SamplingParams" in dir(llm_runtime)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        llm_runtime.Nope


def test_running_a_built_model_imports_no_builder(tiny_build):
    """Loading a built folder and generating from it needs neither the builder nor onnx (most of a second of
    start-up, measured: `LLM("default")` from 2.9-3.1 s to 1.0-1.1 s)."""
    folder = tiny_build("llama-gqa2")
    code = ("import sys\nfrom llm_runtime import LLM, SamplingParams\n"
            f"LLM({str(folder)!r}, threads=1).generate('Hi', SamplingParams(max_tokens=2))\n"
            "print(sorted(m for m in sys.modules if m in ('onnx', 'llm_runtime.model_builder.build')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "[]"
