"""A chat request that offers tools: its prompt, its sampling parameters (the enforcing constraint, markers kept in
the text) and the parser of its reply, shared by the Python API and the server."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tokenizers import Tokenizer

from llm_runtime.chat.template import ChatTemplate
from llm_runtime.completion import Completion
from llm_runtime.errors import ParameterError
from llm_runtime.sampling.params import SamplingParams

from .format import ToolFormat, detect_format
from .parser import ToolCallParser
from .prompt import render_with_tools
from .reply import parse_reply
from .tool import Tool, parse_tool_choice, parse_tools


@dataclass(frozen=True)
class ToolRequest:
    tools: tuple[Tool, ...]
    choice: str  # "none", "auto", "required" or a tool's name
    parallel: bool
    fmt: ToolFormat

    @classmethod
    def of(cls, template: ChatTemplate, tools, tool_choice=None, parallel_tool_calls: bool = True) -> ToolRequest:
        """Validate OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` (ParameterError on bad ones)."""
        parsed = parse_tools(tools)
        if not isinstance(parallel_tool_calls, bool):
            raise ParameterError("parallel_tool_calls", f"must be true or false, got {parallel_tool_calls!r}")
        return cls(parsed, parse_tool_choice(tool_choice, parsed), parallel_tool_calls, detect_format(template.source))

    @property
    def enforced(self) -> bool:
        """The reply follows the format's grammar: calls always parse (and stream their arguments as they come)."""
        return self.choice != "none" and bool(self.tools) and (self.choice != "auto" or not self.fmt.native)

    def prompt(self, template: ChatTemplate, messages: list[dict]) -> str:
        return render_with_tools(template, messages, self.tools, self.fmt, self.choice, self.parallel)

    def params(self, params: SamplingParams, tokenizer: Tokenizer) -> SamplingParams:
        """`params` with the constraint that enforces this choice, and the call markers kept in the text."""
        constraint = self.fmt.constraint(self.tools, self.choice, self.parallel, tokenizer)
        if constraint is not None and self.choice == "auto" and params.constrained:
            constraint = None  # the request's own constraint (a response format) wins; "auto" calls stay free then
        if constraint is None:
            return dataclasses.replace(params, skip_special_tokens=False) if self.choice != "none" else params
        if params.constrained:
            raise ParameterError("tool_choice", f"enforcing tool_choice {self.choice!r} cannot be combined with "
                                 f"{params.constraint.param}")
        return dataclasses.replace(params, skip_special_tokens=False, constraint=constraint)

    @property
    def calls_allowed(self) -> bool:
        """False for tool_choice "none": the reply is content, whatever it looks like."""
        return self.choice != "none"

    def parser(self) -> ToolCallParser:
        return ToolCallParser(self.fmt, stream_arguments=self.enforced)

    def completion(self, reply: Completion) -> Completion:
        """A finished reply split into content and tool calls; finish_reason "tool_calls" when it made calls."""
        if not self.calls_allowed:
            return reply
        parsed = parse_reply(self.fmt, reply.text, stream_arguments=self.enforced)
        reason = "tool_calls" if parsed.tool_calls and reply.finish_reason == "stop" else reply.finish_reason
        return dataclasses.replace(reply, text=parsed.content or "", finish_reason=reason,
                                   tool_calls=parsed.tool_calls)
