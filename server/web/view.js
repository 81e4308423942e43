// A stored message as DOM: markdown for assistant text, a JSON block for a JSON reply, a block per tool call,
// and the reply's figures. Every piece of text goes through textContent or renderMarkdown (text nodes only).

import { renderMarkdown } from "./markdown.js";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The message's element: a .message.<role> box with .body and (assistant) .meta children. */
export function messageNode(message) {
  const node = el("article", `message ${message.role === "user" ? "user" : "assistant"}`);
  node.append(el("div", "body"), el("div", "meta"));
  fill(node, message);
  return node;
}

/** Redraws `node` from `message` (called as a reply streams in). */
export function fill(node, message) {
  const body = node.querySelector(".body");
  body.replaceChildren();
  if (message.role === "user") body.append(el("div", "text", message.content));
  else {
    try {
      body.append(...assistantParts(message));
    } catch (e) {  // a renderer bug must not lose the text
      console.error("could not render the reply", e);
      body.replaceChildren(el("div", "text", String(message.content)));
    }
  }
  node.querySelector(".meta").textContent = meta(message);
  node.classList.toggle("failed", Boolean(message.error));
}

function assistantParts(message) {
  const parts = [];
  const json = jsonValue(message.content);
  if (json !== undefined) parts.push(block("json", "JSON", JSON.stringify(json, null, 2)));
  else if (message.content) {
    const markdown = el("div", "markdown");
    markdown.append(renderMarkdown(message.content));
    parts.push(markdown);
  }
  for (const call of Array.isArray(message.toolCalls) ? message.toolCalls : []) {
    const name = String(call?.function?.name ?? "");
    const args = String(call?.function?.arguments ?? "");
    const parsed = jsonValue(args);
    parts.push(block("tool-call", `tool call: ${name}`, parsed === undefined ? args : JSON.stringify(parsed, null, 2)));
  }
  if (message.error) parts.push(el("div", "error-text", `Error: ${message.error}`));
  if (!parts.length && !message.finish) parts.push(el("span", "typing", "…"));
  return parts;
}

/** The parsed value when `text` is a JSON object or array (a structured reply), else undefined. */
function jsonValue(text) {
  const t = (text || "").trim();
  if (!/^[[{]/.test(t)) return undefined;
  try {
    const value = JSON.parse(t);
    return value && typeof value === "object" ? value : undefined;
  } catch {
    return undefined;
  }
}

function block(className, title, text) {
  const box = el("div", `block ${className}`);
  const pre = el("pre");
  pre.append(el("code", null, text));
  box.append(el("div", "block-head", title), pre);
  return box;
}

/** "TTFT 42 ms · 183.5 tok/s · 64 tokens · stop" for an assistant message with figures. */
function meta(message) {
  const s = message.stats;
  if (message.role === "user" || !s) return "";
  const parts = [];
  if (Number.isFinite(s.ttftMs)) parts.push(`TTFT ${s.ttftMs} ms`);
  if (Number.isFinite(s.tokensPerSecond)) parts.push(`${s.tokensPerSecond} tok/s`);
  if (Number.isFinite(s.tokens)) parts.push(`${s.exact ? "" : "~"}${s.tokens} tokens`);
  if (message.finish) parts.push(String(message.finish));
  return parts.join(" · ");
}
