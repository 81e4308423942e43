// Markdown to DOM nodes, for untrusted text (model output): every piece of text becomes a text node or an
// element's textContent, never HTML; links keep only http(s) and mailto addresses.
// Blocks: fenced code, headings, rules, quotes, lists (nested by indentation), tables, paragraphs.
// Inline: `code`, **bold**, *italic*, ~~strike~~, [text](url), bare http(s) addresses.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const INLINE = new RegExp([
  /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/,           // 1, 2: code span
  /\*\*(?=\S)([\s\S]*?\S)\*\*/,                      // 3: bold
  /\*(?=[^\s*])([^*]*?[^\s*])\*/,                    // 4: italic
  /~~(?=\S)([\s\S]*?\S)~~/,                          // 5: strikethrough
  /\[([^\]\n]+)\]\(\s*<?([^\s)>]+)>?\s*\)/,          // 6, 7: link
  /(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"*])/,      // 8: bare address
].map((r) => r.source).join("|"), "g");

/** The markdown `text` as a DocumentFragment of safe nodes. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  blocks(text.replace(/\r\n?/g, "\n").split("\n"), frag);
  return frag;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function blocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i++;
    } else if ((m = FENCE.exec(line))) {
      const body = [];
      const close = new RegExp(`^ {0,3}${m[1][0]}{${m[1].length},}\\s*$`);
      for (i++; i < lines.length && !close.test(lines[i]); i++) body.push(lines[i]);
      i++;  // the closing fence; a reply still streaming may not have it yet
      parent.append(codeBlock(body.join("\n"), m[2]));
    } else if ((m = HEADING.exec(line))) {
      parent.append(inline(m[2], el(`h${Math.min(m[1].length + 2, 6)}`)));
      i++;
    } else if (RULE.test(line)) {
      parent.append(el("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) body.push(lines[i].replace(QUOTE, ""));
      const quote = el("blockquote");
      blocks(body, quote);
      parent.append(quote);
    } else if ((m = ITEM.exec(line))) {
      i = list(lines, i, parent);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])
               && lines[i + 1].includes("-")) {
      i = table(lines, i, parent);
    } else {
      const body = [];
      for (; i < lines.length && lines[i].trim() && !startsBlock(lines[i]); i++) body.push(lines[i]);
      parent.append(inline(body.join("\n"), el("p")));
    }
  }
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function codeBlock(code, language) {
  const box = el("div", "code");
  const head = el("div", "code-head");
  const copy = el("button", "copy", "Copy");
  copy.type = "button";
  copy.addEventListener("click", () => {
    navigator.clipboard?.writeText(code).then(() => { copy.textContent = "Copied"; }, () => {});
  });
  head.append(el("span", "lang", language || "text"), copy);
  const pre = el("pre");
  pre.append(el("code", null, code));
  box.append(head, pre);
  return box;
}

function list(lines, i, parent) {
  const first = ITEM.exec(lines[i]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3]];
    // the item's own lines: indented deeper than its marker, or blank lines followed by such
    for (i++; i < lines.length; i++) {
      const deeper = lines[i].length - lines[i].trimStart().length > indent;
      if (lines[i].trim() && !deeper) break;
      if (!lines[i].trim() && !(i + 1 < lines.length && lines[i + 1].trim()
          && lines[i + 1].length - lines[i + 1].trimStart().length > indent)) break;
      body.push(lines[i].slice(Math.min(indent + 2, lines[i].length - lines[i].trimStart().length)));
    }
    const item = el("li");
    if (body.length === 1) inline(body[0], item);
    else blocks(body, item);
    node.append(item);
  }
  parent.append(node);
  return i;
}

function cells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

function table(lines, i, parent) {
  const node = el("table");
  const head = el("tr");
  for (const c of cells(lines[i])) head.append(inline(c, el("th")));
  const thead = el("thead");
  const body = el("tbody");
  thead.append(head);
  node.append(thead, body);
  for (i += 2; i < lines.length && lines[i].includes("|") && lines[i].trim(); i++) {
    const row = el("tr");
    for (const c of cells(lines[i])) row.append(inline(c, el("td")));
    body.append(row);
  }
  parent.append(node);
  return i;
}

/** `text`'s inline markup appended to `parent` (returned). */
function inline(text, parent) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    if (m[2] !== undefined) parent.append(el("code", null, m[2]));
    else if (m[3] !== undefined) parent.append(inline(m[3], el("strong")));
    else if (m[4] !== undefined) parent.append(inline(m[4], el("em")));
    else if (m[5] !== undefined) parent.append(inline(m[5], el("del")));
    else if (m[6] !== undefined) parent.append(link(m[6], m[7]));
    else parent.append(link(m[8], m[8]));
    last = m.index + m[0].length;
  }
  if (last < text.length) parent.append(text.slice(last));
  return parent;
}

function link(label, address) {
  let url = null;
  if (/^(https?:\/\/|mailto:)/i.test(address)) {
    try {
      url = new URL(address);
    } catch {
      url = null;
    }
  }
  if (!url) return document.createTextNode(label === address ? label : `${label} (${address})`);
  const a = el("a");
  a.href = url.href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  return inline(label, a);
}
