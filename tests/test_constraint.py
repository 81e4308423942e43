"""Constraints compile with llguidance against a tokenizer, once per distinct text; what cannot be enforced is a
ParameterError that names the field and the reason."""
from __future__ import annotations

import pytest
from tiny_models import tiny_tokenizer

from llm_runtime.errors import ParameterError
from llm_runtime.structured.constraint import Constraint, GrammarCompiler


@pytest.fixture(scope="module")
def compiler():
    tok = tiny_tokenizer(400)
    return GrammarCompiler(tok.to_str(), tok.get_vocab_size(), [tok.token_to_id("<|im_end|>")])


def test_each_kind_compiles_to_a_matcher_in_its_start_state(compiler):
    for constraint in (Constraint.json_schema({"type": "object", "properties": {"a": {"type": "integer"}}}),
                       Constraint.json_schema('{"type": "array", "items": {"enum": ["x", "y"]}}'),
                       Constraint.json_object(), Constraint("regex", r"[0-9]{3}-[a-z]+"),
                       Constraint("grammar", 'start: "yes" | "no"')):
        matcher = compiler.matcher(constraint)
        assert not matcher.is_error() and not matcher.is_accepting(), constraint


def test_a_constraint_compiles_once_and_each_request_gets_its_own_state(compiler):
    before = compiler.compiles
    text = r"(ab|cd)+"
    first, second = compiler.matcher(Constraint("regex", text)), compiler.matcher(Constraint("regex", text))
    assert compiler.compiles == before + 1
    ids = compiler.tokenizer.tokenize_str("ab")
    assert first.consume_tokens(ids) and first.is_accepting()
    assert not second.is_accepting()  # the copies do not share state


def test_the_cache_is_bounded():
    tok = tiny_tokenizer(400)
    small = GrammarCompiler(tok.to_str(), tok.get_vocab_size(), [2], cache_size=2)
    for i in range(4):
        small.matcher(Constraint("regex", f"a{{{i + 1}}}"))
    small.matcher(Constraint("regex", "a{4}"))
    assert small.compiles == 4 and len(small._compiled) == 2


@pytest.mark.parametrize("constraint, param, reason", [
    (Constraint("regex", "[a-z"), "regex", "unclosed character class"),
    (Constraint("grammar", "start: missing_rule"), "grammar", 'unknown name: "missing_rule"'),
    (Constraint.json_schema({"not": {"type": "string"}}, "response_format"), "response_format", "not"),
    (Constraint.json_schema({"type": "strin"}), "json_schema", "strin"),
    (Constraint.json_schema({"type": "string", "pattern": "(?=a)b"}), "json_schema", "look-around"),
])
def test_what_cannot_be_enforced_is_a_parameter_error_with_the_reason(compiler, constraint, param, reason):
    with pytest.raises(ParameterError) as e:
        compiler.matcher(constraint)
    assert e.value.param == param and reason in str(e.value) and str(e.value).startswith(param)


def test_bad_schema_values_are_refused_before_compiling():
    with pytest.raises(ParameterError, match="json_schema is not valid JSON"):
        Constraint.json_schema("{not json")
    with pytest.raises(ParameterError, match="must be a JSON schema object"):
        Constraint.json_schema("[1, 2]")
    with pytest.raises(ParameterError, match="kind must be one of"):
        Constraint("xml", "<a/>")
    with pytest.raises(ParameterError, match="must be a string"):
        Constraint("regex", 3)


def test_json_is_compact_unless_the_schema_asks_otherwise(compiler):
    strict = compiler.matcher(Constraint.json_schema({"type": "object", "properties": {"a": {"type": "integer"}},
                                                      "required": ["a"]}))
    assert strict.consume_tokens(compiler.tokenizer.tokenize_str('{"a": 1}'))
    assert strict.validate_tokens(compiler.tokenizer.tokenize_str("  ")) == 0  # no free whitespace after it
    loose = compiler.matcher(Constraint.json_schema({"type": "object", "x-guidance": {"whitespace_flexible": True}}))
    assert loose.consume_tokens(compiler.tokenizer.tokenize_str('{\n  "b" :  2 }'))
