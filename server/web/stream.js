// Server-sent events read from a fetch Response as they arrive (EventSource cannot POST or send a key).

const EVENT_END = /\r?\n\r?\n/;

/** Yields each event's data string from `response`'s body until the body ends or the data is "[DONE]". */
export async function* eventData(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let m;
      while ((m = EVENT_END.exec(buffer))) {
        const event = buffer.slice(0, m.index);
        buffer = buffer.slice(m.index + m[0].length);
        const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data === "[DONE]") return;
        if (data) yield data;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
