// The chat page's controller: the conversation, the composer, the settings, the model picker and the key prompt.

import { Api } from "./api.js";
import { Reply } from "./reply.js";
import { apiKey, loadChat, saveChat } from "./store.js";
import { eventData } from "./stream.js";
import { fill, messageNode } from "./view.js";

const $ = (id) => document.getElementById(id);
const INTEGERS = ["top_k", "max_tokens", "seed"];
const NUMBERS = ["temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens", "seed"];
const SETTINGS = [...NUMBERS, "format"];

const chat = loadChat();
const api = new Api(apiKey.get);
let streaming = null;  // the AbortController of the reply streaming now

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function persist() {
  chat.system = $("system").value;
  chat.settings = Object.fromEntries(SETTINGS.map((name) => [name, $(name).value]));
  if ($("model").value) chat.model = $("model").value;
  saveChat(chat);
}

/** The request fields the settings ask for: the filled-in numbers, and a JSON reply format (enforced by the
 * server's constrained decoding) when chosen. */
function sampling() {
  const body = $("format").value === "json" ? { response_format: { type: "json_object" } } : {};
  for (const name of NUMBERS) {
    const raw = $(name).value.trim();
    if (!raw) continue;
    body[name] = INTEGERS.includes(name) ? parseInt(raw, 10) : parseFloat(raw);
  }
  return body;
}

/** The conversation as the API takes it: the system prompt, then every finished user and assistant turn. */
function history() {
  const messages = chat.system.trim() ? [{ role: "system", content: chat.system }] : [];
  for (const m of chat.messages) {
    if (m.role === "user" || (m.content && !m.error)) messages.push({ role: m.role, content: m.content });
  }
  return messages;
}

function scrollDown() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function append(message) {
  const node = messageNode(message);
  $("messages").append(node);
  scrollDown();
  return node;
}

function setStreaming(controller) {
  streaming = controller;
  $("send").hidden = Boolean(controller);
  $("stop").hidden = !controller;
  document.body.classList.toggle("streaming", Boolean(controller));
}

/** Opens the key dialog; resolves once a key is entered. */
function askKey(reason) {
  $("key-reason").textContent = apiKey.get() ? `The key was refused (${reason}). Enter another.`
    : "This server needs an API key.";
  $("key").value = "";
  const dialog = $("key-dialog");
  return new Promise((resolve) => {
    $("key-form").onsubmit = (event) => {
      const key = $("key").value.trim();
      if (!key) {
        event.preventDefault();
        return;
      }
      apiKey.set(key, $("remember-key").checked);
      resolve();
    };
    if (!dialog.open) dialog.showModal();
  });
}

async function loadModels() {
  for (;;) {
    try {
      const ids = await api.models();
      $("model").replaceChildren(...ids.map((id) => new Option(id, id, false, id === chat.model)));
      showError("");
      return;
    } catch (e) {
      if (e.status !== 401) {
        showError(`Could not list the models: ${e.message}`);
        return;
      }
      await askKey(e.message);
    }
  }
}

/** Streams the assistant's reply to the conversation so far into a new message; asks for a key on a 401. */
async function streamReply() {
  const body = { model: $("model").value || chat.model, messages: history(), ...sampling() };
  const message = { role: "assistant", content: "" };
  chat.messages.push(message);
  const node = append(message);
  const controller = new AbortController();
  setStreaming(controller);
  const reply = new Reply(performance.now());
  let drawing = false;
  const draw = () => {
    drawing = false;
    fill(node, message);
    saveChat(chat);  // a reload mid-reply keeps what has arrived
    scrollDown();
  };
  let refused = null;
  try {
    const response = await api.chat(body, controller.signal);
    for await (const data of eventData(response)) {
      reply.add(JSON.parse(data), performance.now());
      Object.assign(message, reply.fields());
      if (!drawing) {
        drawing = true;
        requestAnimationFrame(draw);
      }
    }
    message.finish = reply.finishReason || "incomplete";
  } catch (e) {
    if (controller.signal.aborted) message.finish = "stopped";
    else if (e.status === 401) refused = e;
    else message.error = e.message;
  }
  setStreaming(null);
  if (refused) {
    chat.messages.splice(chat.messages.indexOf(message), 1);
    node.remove();
    await askKey(refused.message);
    return streamReply();
  }
  message.stats = reply.stats();
  fill(node, message);
  persist();
}

function send() {
  const text = $("input").value;
  if (streaming || !text.trim()) return;
  $("input").value = "";
  showError("");
  chat.messages.push({ role: "user", content: text });
  append(chat.messages.at(-1));
  persist();
  streamReply();
}

function newChat() {
  streaming?.abort();
  chat.messages = [];
  $("messages").replaceChildren();
  persist();
  $("input").focus();
}

function restore() {
  $("system").value = chat.system;
  for (const name of SETTINGS) {
    if (typeof chat.settings[name] === "string") $(name).value = chat.settings[name];
  }
  for (const message of chat.messages) {
    if (message.role === "assistant" && !message.finish && !message.error) message.finish = "interrupted";
    append(message);
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
$("stop").addEventListener("click", () => streaming?.abort());
$("new-chat").addEventListener("click", newChat);
$("toggle-settings").addEventListener("click", () => {
  const panel = $("settings");
  panel.hidden = !panel.hidden;
  $("toggle-settings").setAttribute("aria-expanded", String(!panel.hidden));
});
for (const id of ["system", "model", ...SETTINGS]) $(id).addEventListener("change", persist);
$("key-dialog").addEventListener("cancel", (event) => event.preventDefault());  // a key is needed to go on

restore();
loadModels();
$("input").focus();
