"""docs/request-fields.md is the generated page, so it says what the declaration and the field policy say."""
from pathlib import Path

from llm_runtime.cli.field_docs import markdown
from llm_runtime.sampling.fields import REQUEST_FIELDS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "request-fields.md"


def test_the_committed_page_is_the_generated_one():
    # on failure: python -m llm_runtime.cli.field_docs > docs/request-fields.md
    assert PAGE.read_text() == markdown() + "\n"


def test_the_page_has_a_row_per_declared_field_and_per_endpoint_rule():
    page = markdown()
    for f in REQUEST_FIELDS:
        assert f"| `{f.name}` | {f.kind.value} |" in page
    for heading in ("/v1/chat/completions", "/v1/completions", "/v1/responses"):
        assert f"### `POST {heading}`" in page
    assert "| `stop` | string or list of strings | 1..256 characters each; at most 4 over HTTP |" in page
    assert "| `suffix` | 400 unsupported_parameter |" in page
