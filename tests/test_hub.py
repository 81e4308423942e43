"""Hub names resolved through the real huggingface_hub client against a Hub stand-in on loopback
(tests/hub_server.py): partial downloads, revisions, GGUF file choice, ONNX repositories, errors, a network cut
mid-file, concurrent first uses, the build cache, offline use, and pull/list/rm."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from arch_cases import CASES
from hub_server import FakeHub
from llm_runtime.model_builder.source import SourceError
from safetensors.numpy import load_file, save_file
from test_gguf_source import QT, gpt2_metadata, tiny_llama, write_llama
from tiny_models import save_tiny_model, tiny_tokenizer

from llm_runtime.cli.main import main
from llm_runtime.models import build_cache
from llm_runtime.models.hub import choose
from llm_runtime.models.hub_name import parse
from llm_runtime.models.resolver import build_options_for, model_name, resolve_hub, resolve_model

NEEDED = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
          "model.safetensors"}
JUNK = {"pytorch_model.bin": b"pickle", "README.md": b"# tiny", "onnx/model.onnx": b"not ours",
        "original/consolidated.pth": b"pickle"}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hub(tiny_hf, tiny_build, tmp_path_factory):
    """The stand-in with: a safetensors repo (main and a v2 branch of other weights), the same weights sharded
    with an index, a GGUF repo of two quantizations, an ONNX build's repo and a gated repo."""
    with FakeHub() as hub:
        hf = files_of(tiny_hf("llama-gqa2"))
        hub.push("org/tiny", hf | JUNK)
        other = save_tiny_model(tmp_path_factory.mktemp("v2") / "hf", CASES["llama-gqa2"](), seed=1)
        hub.push("org/tiny", files_of(other), revision="v2")
        weights = load_file(tiny_hf("llama-gqa2") / "model.safetensors")
        names = sorted(weights)
        shards, folder = {}, tmp_path_factory.mktemp("shards")
        for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
            file = f"model-0000{i + 1}-of-00002.safetensors"
            save_file({n: weights[n] for n in part}, folder / file, metadata={"format": "pt"})
            shards[file] = (folder / file).read_bytes()
        index = {"metadata": {}, "weight_map": {n: f for f, data in shards.items() for n in load_file(folder / f)}}
        sharded = {k: v for k, v in hf.items() if k != "model.safetensors"} | shards
        hub.push("org/tiny-sharded", sharded | {"model.safetensors.index.json": json.dumps(index).encode(),
                                                "consolidated.safetensors": hf["model.safetensors"]})
        bpe = tiny_tokenizer(300)
        cfg, w = tiny_llama(bpe.get_vocab_size(), False)
        ggufs = {}
        for file, qtype in (("tiny-llama-Q8_0.gguf", QT.Q8_0), ("tiny-llama.q4_0.gguf", QT.Q4_0)):
            path = tmp_path_factory.mktemp("gguf") / file
            write_llama(path, cfg, w, qtype, tokenizer=lambda writer: gpt2_metadata(writer, bpe))
            ggufs[file] = path.read_bytes()
        hub.push("org/tiny-GGUF", ggufs | {"README.md": b"# quants"})
        hub.push("org/tiny-onnx", files_of(tiny_build("llama-gqa2")) | {"README.md": b"# onnx"})
        hub.push("org/gated", hf, gated=True)
        yield hub


@pytest.fixture
def cache(hub, tmp_path, monkeypatch):
    """Fresh caches, ours and huggingface_hub's, on the stand-in: for this process (huggingface_hub reads its
    settings once, at import, so they are set on its constants too) and for the processes it starts."""
    from huggingface_hub import constants
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hf"), "LLM_RUNTIME_HOME": str(tmp_path / "home"),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "HF_TOKEN", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.requests.clear()
    hub.cut.clear()
    hub.delay = 0.0
    disable_progress_bars()
    yield tmp_path
    enable_progress_bars()


def built_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("model.onnx", "model.onnx.data", "tokenizer.json")}


def test_a_safetensors_repo_downloads_what_a_build_needs_and_builds_once(hub, cache, tiny_hf):
    folder = resolve_model("org/tiny", progress=False)
    assert set(hub.downloads()) == NEEDED  # no .bin, .pth, README or other formats
    assert built_files(folder) == built_files(resolve_model(tiny_hf("llama-gqa2"), progress=False))
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    hub.requests.clear()
    assert resolve_model("org/tiny", progress=False) == folder  # from the cache
    assert hub.downloads() == [] and (folder / "model.onnx").stat().st_mtime_ns == stamp
    assert model_name("org/tiny") == "org/tiny" and model_name("hf.co/org/tiny-GGUF:q8_0") == "org/tiny-GGUF:q8_0"


def test_revisions_resolve_to_commits_and_a_new_one_builds_anew(hub, cache):
    main_folder = resolve_model("org/tiny", progress=False)
    v2 = resolve_model("org/tiny@v2", progress=False)
    assert v2 != main_folder and built_files(v2)["model.onnx.data"] != built_files(main_folder)["model.onnx.data"]
    commit = hub.repos["org/tiny"].refs["main"]
    hub.requests.clear()
    assert resolve_model(f"org/tiny@{commit}", progress=False) == main_folder  # the same commit: the same build
    assert hub.downloads() == []
    with pytest.raises(SourceError, match="has no revision 'v9'"):
        resolve_model("org/tiny@v9", progress=False)


def test_a_sharded_repo_downloads_the_shards_its_index_names(hub, cache, tiny_hf):
    folder = resolve_model("org/tiny-sharded", progress=False)
    assert set(hub.downloads()) == NEEDED - {"model.safetensors"} | {
        "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert built_files(folder) == built_files(resolve_model(tiny_hf("llama-gqa2"), progress=False))


def test_a_gguf_repo_gives_the_file_of_the_quant_asked_for(hub, cache):
    q8 = resolve_model("org/tiny-GGUF:q8_0", progress=False)  # any case, as llama.cpp and Ollama take it
    assert hub.downloads() == ["tiny-llama-Q8_0.gguf"]
    q4 = resolve_model("org/tiny-GGUF/tiny-llama.q4_0.gguf", progress=False)
    assert hub.downloads() == ["tiny-llama-Q8_0.gguf", "tiny-llama.q4_0.gguf"] and q4 != q8
    assert resolve_model("org/tiny-GGUF:Q4_0", progress=False) == q4
    with pytest.raises(SourceError, match=r"no Q5_K_M GGUF file in org/tiny-GGUF \(available: Q4_0, Q8_0\)"):
        resolve_model("org/tiny-GGUF:Q5_K_M", progress=False)
    with pytest.raises(SourceError, match=r"no Q4_K_M GGUF file .*available: Q4_0, Q8_0"):
        resolve_model("org/tiny-GGUF", progress=False)  # no quant: Q4_K_M, llama.cpp's default, is not there


def test_an_onnx_repo_loads_without_a_build(hub, cache, tiny_build):
    from llm_runtime import LLM, SamplingParams

    folder = resolve_model("org/tiny-onnx", progress=False)
    assert set(hub.downloads()) == set(files_of(tiny_build("llama-gqa2")))  # not its README
    assert files_of(folder) == files_of(tiny_build("llama-gqa2"))
    assert not (build_cache.root() / build_cache.entries()[0].key / "model").exists()  # nothing built
    greedy = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    want = LLM(tiny_build("llama-gqa2")).generate("Hello", greedy).text
    assert LLM("org/tiny-onnx").generate("Hello", greedy).text == want


@pytest.mark.parametrize("name, message", [
    ("org/nope", "error: model not found: org/nope is no local path and no repository on the Hub"),
    ("org/gated", "error: org/gated: org/gated is gated: accept its terms on the Hub, then set HF_TOKEN"),
    ("org/tiny@nope", "error: org/tiny@nope: org/tiny has no revision 'nope'"),
    ("org/tiny-GGUF/missing.gguf", "error: org/tiny-GGUF/missing.gguf: no file missing.gguf in org/tiny-GGUF"),
])
def test_hub_errors_are_one_line(hub, cache, capsys, name, message):
    assert main(["pull", name]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err, err  # no progress bars here: HF_HUB_DISABLE_PROGRESS_BARS


def test_a_download_cut_mid_file_resumes_or_leaves_nothing_built(hub, cache):
    hub.cut["tiny-llama-Q8_0.gguf"] = 1  # cut once: huggingface_hub resumes from where it stopped
    folder = resolve_model("org/tiny-GGUF:Q8_0", progress=False)
    gets = [p for m, p in hub.requests if m == "GET" and p.endswith("Q8_0.gguf")]
    assert len(gets) == 2 and (folder / "model.onnx").is_file()
    hub.cut["tiny-llama.q4_0.gguf"] = 100  # cut every time: one error, and no build recorded
    with pytest.raises(SourceError, match="org/tiny-GGUF:Q4_0: the Hub answered peer closed connection"):
        resolve_model("org/tiny-GGUF:Q4_0", progress=False)
    assert [e.name for e in build_cache.entries()] == ["org/tiny-GGUF:Q8_0"]
    hub.cut.clear()
    assert resolve_model("org/tiny-GGUF:Q4_0", progress=False).is_dir()


def test_concurrent_first_uses_download_and_build_once(hub, cache):
    hub.delay = 1.0  # both processes are surely waiting at once
    code = ("import logging; logging.basicConfig(level=logging.INFO); "
            "from llm_runtime.models.resolver import resolve_model; print(resolve_model('org/tiny', progress=False))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs[0][0] == outs[1][0]
    assert sum(err.count("building org/tiny") for _, err in outs) == 1
    assert hub.downloads().count("model.safetensors") == 1 and len(build_cache.entries()) == 1


def test_offline_a_pulled_name_loads_from_the_cache(hub, cache, monkeypatch):
    from huggingface_hub import constants

    folder = resolve_model("org/tiny-GGUF:Q8_0", progress=False)
    entry = resolve_hub(parse("org/tiny"), build_options_for("cpu"), progress=False)
    assert main(["rm", "org/tiny", "--keep-download"]) == 0  # the build goes, the download stays
    assert not Path(entry.folder).exists()
    hub.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve_model("org/tiny-GGUF:Q8_0", progress=False) == folder
    assert Path(resolve_model("org/tiny", progress=False)) == Path(entry.folder)  # built again from the download
    assert hub.requests == []
    with pytest.raises(SourceError, match="org/tiny-onnx is not in the cache and the Hub is out of reach"):
        resolve_model("org/tiny-onnx", progress=False)


def test_pull_list_rm(hub, cache, capsys):
    assert main(["pull", "org/tiny-GGUF:Q8_0"]) == 0
    assert main(["pull", "org/tiny", "--precision", "fp32"]) == 0
    assert main(["pull", "org/tiny"]) == 0
    out = capsys.readouterr().out
    assert "org/tiny at " in out and "int4-cpu" in out
    assert main(["list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["NAME", "REVISION", "RECIPE", "SIZE", "LAST", "USED"]
    assert sorted(r.split()[0] for r in rows[1:]) == ["org/tiny", "org/tiny", "org/tiny-GGUF:Q8_0"]
    assert all("MB" in r and r.endswith("just now") for r in rows[1:])
    assert {r.split()[3] for r in rows[1:] if r.startswith("org/tiny ")} >= {"fp32-cpu"}
    assert main(["rm", "org/tiny"]) == 0  # both recipes and the download
    assert "deleted" in capsys.readouterr().out
    assert [e.name for e in build_cache.entries()] == ["org/tiny-GGUF:Q8_0"]
    assert not (cache / "hf" / "models--org--tiny" / "snapshots").exists() or not any(
        (cache / "hf" / "models--org--tiny" / "snapshots").iterdir())
    assert main(["rm", "org/tiny"]) == 2
    assert "error: org/tiny is not in the cache" in capsys.readouterr().err


def test_serve_names_the_model_by_its_hub_name(hub, cache):
    import httpx
    from server_process import serving

    with serving("org/tiny-onnx") as base:
        assert [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]] == ["org/tiny-onnx"]


@pytest.mark.parametrize("name, files, chosen", [
    ("o/r", ["m-Q8_0.gguf", "README.md"], ("gguf", ("m-Q8_0.gguf",))),  # the only GGUF
    ("o/r", ["m-Q8_0.gguf", "m-Q4_K_M.gguf", "mmproj-f16.gguf"], ("gguf", ("m-Q4_K_M.gguf",))),  # llama.cpp's default
    ("o/r:q8_0", ["sub/m-Q8_0.gguf", "m-Q8_0.gguf"], ("gguf", ("m-Q8_0.gguf",))),  # the shallowest
    ("o/r/cpu", ["cpu/genai_config.json", "cpu/model.onnx", "cpu/README.md", "gpu/genai_config.json"],
     ("onnx", ("cpu/genai_config.json", "cpu/model.onnx"))),
    ("o/r", ["config.json", "model-1.safetensors", "model-2.safetensors", "model.safetensors.index.json",
             "consolidated.safetensors", "tokenizer.json"],
     ("safetensors", ("config.json", "model.safetensors.index.json", "tokenizer.json"))),  # shards from the index
])
def test_the_files_a_name_picks(name, files, chosen):
    assert choose(parse(name), files) == chosen


@pytest.mark.parametrize("name, files, message", [
    ("o/r", ["cpu/genai_config.json", "gpu/genai_config.json"], "in subfolders; name one: o/r/cpu, o/r/gpu"),
    ("o/r:Q8_0", ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"], "split into parts"),
    ("o/r", ["config.json", "pytorch_model.bin"], "no safetensors weights, GGUF file or ONNX build in o/r"),
    ("o/r/cpu", ["config.json", "model.safetensors"], "cpu holds no ONNX build"),
])
def test_names_that_pick_nothing_say_why(name, files, message):
    with pytest.raises(SourceError, match=message):
        choose(parse(name), files)
