// The server's /v1 API as the page uses it: the model list and streamed chat completions, with the user's key.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The error's message from an OpenAI-shaped body, or the HTTP status. */
async function failure(response) {
  let message = `HTTP ${response.status}`;
  try {
    message = (await response.json()).error?.message || message;
  } catch {
    // not JSON: keep the status
  }
  return new ApiError(response.status, message);
}

export class Api {
  /** `key()` returns the API key to send, or "" for none. */
  constructor(key) {
    this.key = key;
  }

  headers() {
    const headers = { "Content-Type": "application/json" };
    if (this.key()) headers.Authorization = `Bearer ${this.key()}`;
    return headers;
  }

  /** The served model ids. Throws ApiError (status 401 when a key is needed or wrong). */
  async models() {
    const response = await fetch("v1/models", { headers: this.headers() });
    if (!response.ok) throw await failure(response);
    return (await response.json()).data.map((m) => m.id);
  }

  /** The streaming Response of a chat completion; aborting `signal` closes it, which cancels it on the server. */
  async chat(body, signal) {
    const response = await fetch("v1/chat/completions", {
      method: "POST", headers: this.headers(), signal,
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
    });
    if (!response.ok) throw await failure(response);
    return response;
  }
}
