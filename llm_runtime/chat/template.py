"""Chat templates: Hugging Face Jinja templates rendered in a sandbox, the same way transformers does."""
from __future__ import annotations

import json
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llm_runtime.errors import ParameterError

from .messages import normalize_messages


class _TemplateRaised(jinja2.exceptions.TemplateError):
    """raise_exception() called by the template: its message is the template author's, fit for a user."""


def _raise_exception(message: str):
    raise _TemplateRaised(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson escapes HTML characters; transformers' does not, and takes json.dumps options
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _TemplateDict:
    """`dict` for templates, without the class's attributes to climb out of the sandbox with."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace` that refuses underscore attributes, as transformers' does."""

    def __init__(*args, **kwargs):  # Jinja's signature trick, so `namespace(self=...)` works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} may not start with '_'")


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask marker) renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


def select_template(source: str | list[dict[str, str]]) -> str:
    """The template text from tokenizer_config.json's `chat_template`: a string, or named ones (take "default")."""
    if isinstance(source, str):
        return source
    named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
    if not isinstance(named.get("default"), str):
        raise ValueError(f"chat_template lists templates {sorted(map(str, named))} but none named 'default'")
    return named["default"]


def _token_text(token: Any) -> str:
    # tokenizer_config.json spells special tokens as strings or as AddedToken dicts
    if isinstance(token, dict):
        return str(token.get("content", ""))
    return "" if token is None else str(token)


class ChatTemplate:
    """A compiled chat template plus the special tokens it may print."""

    def __init__(self, source: str | list[dict[str, str]], bos_token: Any = "", eos_token: Any = ""):
        self.source = select_template(source)
        self.bos_token = _token_text(bos_token)
        self.eos_token = _token_text(eos_token)
        try:
            self._template = _environment().from_string(self.source)
        except jinja2.TemplateError as e:
            raise ValueError(f"chat template does not compile: {e}") from e

    @classmethod
    def from_folder(cls, folder: str | Path) -> ChatTemplate | None:
        """The template of a Hugging Face model folder (chat_template.jinja, chat_template.json or
        tokenizer_config.json), with its bos/eos tokens; None when the folder has none."""
        folder = Path(folder)
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        source = config.get("chat_template")
        if (folder / "chat_template.json").is_file():
            source = json.loads((folder / "chat_template.json").read_text()).get("chat_template", source)
        if (folder / "chat_template.jinja").is_file():
            source = (folder / "chat_template.jinja").read_text()
        if not source:
            return None
        return cls(source, config.get("bos_token"), config.get("eos_token"))

    @classmethod
    def for_model(cls, folder) -> ChatTemplate:
        """A built model folder's (ModelFolder) own template, else ChatML with its EOS token."""
        return cls.from_folder(folder.path) or cls.fallback("chatml", eos_token=folder.special_token("eos_token") or "")

    @classmethod
    def fallback(cls, name: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
        """One of the templates shipped in prompts/templates: "chatml", "llama3" or "plain"."""
        folder = files("llm_runtime.prompts") / "templates"
        path = folder / f"{name}.jinja"
        if not path.is_file():
            known = sorted(p.name[:-len(".jinja")] for p in folder.iterdir() if p.name.endswith(".jinja"))
            raise ValueError(f"no fallback chat template {name!r}; known: {', '.join(known)}")
        return cls(path.read_text(encoding="utf-8"), bos_token, eos_token)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **extra: Any) -> str:
        """The prompt text for `messages`; `extra` (tools, documents, enable_thinking, ...) reaches the template.
        A conversation the template cannot express raises `ParameterError` naming the first message it fails on,
        with the template's own words (raise_exception) but no Jinja internals."""
        messages = normalize_messages(messages)
        for i, m in enumerate(messages):
            if "tool_calls" in m and "tool_calls" not in self.source:
                raise ParameterError("messages", f"messages[{i}] has tool_calls, which this model's chat template "
                                                 f"cannot express")
        variables = {"bos_token": self.bos_token, "eos_token": self.eos_token, "tools": None, "documents": None,
                     **extra, "add_generation_prompt": add_generation_prompt}
        try:
            return self._template.render(**variables, messages=messages)
        except Exception as e:  # a template is untrusted code: any failure is the template's
            reason = e.message if isinstance(e, _TemplateRaised) else None
        where = self._first_failing(messages, variables)
        raise ParameterError("messages", f"{where or 'the conversation'} cannot be expressed by this model's chat "
                                         f"template" + (f": {reason}" if reason else ""))

    def _first_failing(self, messages: list[dict[str, Any]], variables: dict) -> str | None:
        """'messages[i] (role r)' for the shortest prefix of `messages` the template fails on."""
        for i in range(len(messages)):
            try:
                self._template.render(**variables, messages=messages[:i + 1])
            except Exception:
                return f"messages[{i}] (role {messages[i]['role']})"
        return None
