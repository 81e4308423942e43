// One assistant reply folded from OpenAI chat.completion.chunk objects: text, tool calls, finish reason, usage,
// and its timing (time to first token, tokens per second).

export class Reply {
  /** `sentAt`: when the request left, in performance.now() milliseconds. */
  constructor(sentAt) {
    this.sentAt = sentAt;
    this.content = "";
    this.toolCalls = [];  // [{id, type, function: {name, arguments}}], arguments joined from the deltas
    this.finishReason = null;
    this.usage = null;
    this.deltas = 0;
    this.firstAt = null;
    this.lastAt = null;
  }

  /** Folds in one parsed event; an error event (`{"error": {...}}`) throws its message. */
  add(chunk, now) {
    if (chunk.error) throw new Error(chunk.error.message || "generation failed");
    if (chunk.usage) this.usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      if (choice.index !== 0) continue;  // the page asks for one choice
      const delta = choice.delta || {};
      let grew = false;
      if (delta.content) {
        this.content += delta.content;
        grew = true;
      }
      for (const part of delta.tool_calls || []) {
        this.addToolCall(part);
        grew = true;
      }
      if (grew) {
        this.deltas += 1;
        this.firstAt ??= now;
        this.lastAt = now;
      }
      if (choice.finish_reason) this.finishReason = choice.finish_reason;
    }
  }

  addToolCall(part) {
    const i = part.index ?? this.toolCalls.length;
    const call = (this.toolCalls[i] ??= { id: "", type: "function", function: { name: "", arguments: "" } });
    if (part.id) call.id = part.id;
    if (part.type) call.type = part.type;
    if (part.function?.name) call.function.name += part.function.name;
    if (part.function?.arguments) call.function.arguments += part.function.arguments;
  }

  /** {ttftMs, tokens, exact, tokensPerSecond}: tokens from the usage chunk (exact) or counted deltas;
   * tokens per second over the time after the first token. */
  stats() {
    const exact = Boolean(this.usage);
    const tokens = exact ? this.usage.completion_tokens : this.deltas;
    const span = (this.lastAt ?? 0) - (this.firstAt ?? 0);
    return {
      ttftMs: this.firstAt === null ? null : Math.round(this.firstAt - this.sentAt),
      tokens, exact,
      tokensPerSecond: tokens > 1 && span > 0 ? Math.round(((tokens - 1) / span) * 10000) / 10 : null,
    };
  }

  /** The fields this reply sets on the stored assistant message. */
  fields() {
    return this.toolCalls.length ? { content: this.content, toolCalls: this.toolCalls } : { content: this.content };
  }
}
