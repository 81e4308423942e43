// What the page keeps in the browser: the conversation, system prompt, settings and model in localStorage
// (restored on reload, until "New chat"); the API key in sessionStorage, or localStorage when asked to remember.

const CHAT = "llm-runtime.chat";
const KEY = "llm-runtime.api-key";

function validMessage(m) {
  return m && typeof m === "object" && ["user", "assistant"].includes(m.role) && typeof m.content === "string";
}

/** The stored chat ({messages, system, settings, model}); anything unreadable becomes an empty chat. */
export function loadChat() {
  let stored = {};
  try {
    stored = JSON.parse(localStorage.getItem(CHAT) || "{}") || {};
  } catch {
    stored = {};
  }
  return {
    messages: Array.isArray(stored.messages) ? stored.messages.filter(validMessage) : [],
    system: typeof stored.system === "string" ? stored.system : "",
    settings: stored.settings && typeof stored.settings === "object" ? stored.settings : {},
    model: typeof stored.model === "string" ? stored.model : "",
  };
}

export function saveChat(chat) {
  try {
    localStorage.setItem(CHAT, JSON.stringify(chat));
  } catch {
    // storage full or disabled: the page still works, without keeping the chat
  }
}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "",
  set(value, remember) {
    sessionStorage.setItem(KEY, value);
    if (remember) localStorage.setItem(KEY, value);
    else localStorage.removeItem(KEY);
  },
};
