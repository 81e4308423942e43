"""Hub names: org/name, @revision, :QUANT, a file or subfolder path, Ollama's hf.co/ prefix; GGUF quant labels."""
import pytest

from llm_runtime.models.hub_name import HubName, is_split, parse, quant_of


@pytest.mark.parametrize("text, name", [
    ("Qwen/Qwen2.5-0.5B-Instruct", HubName("Qwen/Qwen2.5-0.5B-Instruct")),
    ("Qwen/Qwen2.5-0.5B-Instruct@v1.0", HubName("Qwen/Qwen2.5-0.5B-Instruct", revision="v1.0")),
    ("org/repo-GGUF:q4_k_m", HubName("org/repo-GGUF", quant="q4_k_m")),
    ("hf.co/org/repo-GGUF:Q4_K_M", HubName("org/repo-GGUF", quant="Q4_K_M")),
    ("https://huggingface.co/org/repo", HubName("org/repo")),
    ("org/repo@abc123:Q8_0", HubName("org/repo", revision="abc123", quant="Q8_0")),
    ("org/repo/model-q8_0.gguf", HubName("org/repo", path="model-q8_0.gguf")),
    ("org/repo/cpu/int4@main", HubName("org/repo", revision="main", path="cpu/int4")),
])
def test_names_parse_and_print_back(text, name):
    assert parse(text) == name
    assert parse(str(name)) == name  # the canonical form parses to the same name


@pytest.mark.parametrize("text", ["default", "model.gguf", "./org/name", "../org/name", "/abs/org/name", "just-a-name",
                                  "org/", "org/name with space"])
def test_paths_and_other_words_are_not_hub_names(text):
    assert parse(text) is None


def test_a_file_and_a_quant_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        parse("org/repo/model.gguf:Q4_0")


@pytest.mark.parametrize("file, quant", [
    ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Q4_K_M"), ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"), ("sub/model-f16.gguf", "F16"),
    ("model-Q8_0-00001-of-00002.gguf", "Q8_0"), ("mmproj-model-f16.gguf", None), ("README.md", None),
])
def test_quant_labels_read_from_file_names(file, quant):
    assert quant_of(file) == quant


def test_split_files_are_told_apart():
    assert is_split("model-Q8_0-00001-of-00002.gguf") and not is_split("model-Q8_0.gguf")
