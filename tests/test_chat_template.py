"""ChatTemplate renders like transformers' apply_chat_template, validates messages, and stays sandboxed."""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models

from llm_runtime.chat.template import ChatTemplate

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Exercises what Hub templates use: namespace, loop controls, tojson with indent, raise_exception, bos/eos.
RICH = """{{ bos_token }}
{%- set ns = namespace(system='') -%}
{%- if messages[0]['role'] == 'system' -%}
    {%- set ns.system = messages[0]['content'] -%}
    {%- set messages = messages[1:] -%}
{%- endif -%}
{%- if tools %}[TOOLS]{{ tools | tojson(indent=2) }}[/TOOLS]{% endif -%}
{% for message in messages %}
    {%- if message['role'] == 'tool' %}{% continue %}{% endif -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {%- if message['role'] == 'user' -%}
        [INST] {% if loop.first and ns.system %}{{ ns.system }}\n\n{% endif %}{{ message['content'] | trim }} [/INST]
    {%- else -%}
        {{ ' ' + message['content'] | trim + eos_token }}
    {%- endif -%}
{% endfor %}"""
CONVERSATIONS = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Bonjour, ça va? 🙂"}],
    [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "  Tell me a joke.  "}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "日本語"}],
]


def hf_tokenizer(template):
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", chat_template=template)


TEMPLATES = {
    "chatml_inline": lambda: ChatTemplate(CHATML, "<s>", "</s>"),
    "rich": lambda: ChatTemplate(RICH, "<s>", "</s>"),
    **{f"fallback_{name}": (lambda name=name: ChatTemplate.fallback(name, "<s>", "</s>"))
       for name in ("chatml", "llama3", "plain")},
}


@pytest.fixture(scope="module", params=TEMPLATES)
def template_pair(request):
    ours = TEMPLATES[request.param]()
    return ours, hf_tokenizer(ours.source)


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=range(len(CONVERSATIONS)))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_matches_transformers(template_pair, conversation, add_generation_prompt):
    ours, hf = template_pair
    expected = hf.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours.render(conversation, add_generation_prompt=add_generation_prompt) == expected


def test_extra_variables_reach_template():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"city": "Zürich"}}}]
    conversation = CONVERSATIONS[0]
    expected = hf_tokenizer(RICH).apply_chat_template(conversation, tools=tools, tokenize=False)
    rendered = ChatTemplate(RICH, "<s>", "</s>").render(conversation, add_generation_prompt=False, tools=tools)
    assert rendered == expected and '"city": "Zürich"' in rendered


def test_fallback_chatml_is_standard_chatml():
    messages = CONVERSATIONS[2]
    assert ChatTemplate.fallback("chatml").render(messages) == ChatTemplate(CHATML).render(messages)
    assert ChatTemplate.fallback("plain", bos_token="<s>").render(CONVERSATIONS[0]) == (
        "<s>You are terse.\n\nUser: What is 2+2?\n\nAssistant:")


def test_unknown_fallback_names_the_known_ones():
    with pytest.raises(ValueError, match="chatml"):
        ChatTemplate.fallback("nope")


def test_text_parts_are_joined():
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]}]
    assert ChatTemplate(CHATML).render(parts) == "<|im_start|>user\nHello\nworld<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("messages", [
    [],
    "hello",
    [{"role": "wizard", "content": "x"}],
    [{"role": "user"}],
    [{"role": "user", "content": 3}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}],
    ["not a dict"],
])
def test_invalid_messages_raise(messages):
    with pytest.raises(ValueError, match="messages"):
        ChatTemplate(CHATML).render(messages)


def test_raise_exception_becomes_value_error():
    with pytest.raises(ValueError, match="roles must alternate"):
        ChatTemplate(RICH).render([{"role": "assistant", "content": "first"}])


def test_template_errors_become_value_errors():
    with pytest.raises(ValueError, match="compile"):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(ValueError, match=r"^messages\[0\] \(role user\) cannot be expressed by this model's chat "
                                         r"template$"):  # no Jinja internals
        ChatTemplate("{{ messages[0]['content'] + 1 }}").render(CONVERSATIONS[1])


def test_named_templates_take_default(tmp_path):
    named = [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": CHATML}]
    assert ChatTemplate(named).source == CHATML
    with pytest.raises(ValueError, match="default"):
        ChatTemplate(named[:1])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": named, "bos_token": {"content": "<s>", "special": True}, "eos_token": "</s>"}))
    from_folder = ChatTemplate.from_folder(tmp_path)
    assert from_folder.source == CHATML and (from_folder.bos_token, from_folder.eos_token) == ("<s>", "</s>")
    (tmp_path / "chat_template.jinja").write_text(RICH)
    assert ChatTemplate.from_folder(tmp_path).source == RICH
    assert ChatTemplate.from_folder(tmp_path / "missing") is None


def test_strftime_now_and_generation_tag():
    template = "{{ strftime_now('%Y') }}|{% generation %}{{ messages[-1]['content'] }}{% endgeneration %}"
    rendered = ChatTemplate(template).render(CONVERSATIONS[1])
    year, content = rendered.split("|")
    assert len(year) == 4 and year.isdigit() and content == CONVERSATIONS[1][0]["content"]


@pytest.mark.parametrize("attack", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ raise_exception.__globals__['__builtins__'] }}",
    "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
    "{{ messages.append({'role': 'user'}) }}",
    "{{ dict.__class__ }}{{ dict.mro() }}",
])
def test_sandbox_blocks_escapes(attack):
    try:
        rendered = ChatTemplate(attack).render(CONVERSATIONS[1])
    except ValueError:
        return
    assert not any(leak in rendered for leak in ("class", "object", "function", "uid="))
