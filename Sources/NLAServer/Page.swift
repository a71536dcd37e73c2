// The page served at / (HTML + CSS + JS in one string, no external resources: works offline).

enum Page {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nla serve</title>
<style>
  :root { --fg: #1d2330; --muted: #6b7385; --line: #d9dde6; --accent: #2f5fd0; --bg: #f6f7fa; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
  header { padding: 10px 18px; background: #fff; border-bottom: 1px solid var(--line); display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 16px; margin: 0; }
  header #models { color: var(--muted); font-size: 12px; }
  main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(280px, 2fr); gap: 14px; padding: 14px 18px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px; }
  h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 0 0 8px; }
  textarea { width: 100%; min-height: 56px; font: inherit; padding: 6px; border: 1px solid var(--line); border-radius: 4px; }
  button { font: inherit; padding: 5px 12px; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 4px; cursor: pointer; }
  button.secondary { background: #fff; color: var(--accent); }
  button:disabled { opacity: .5; cursor: default; }
  .row { display: flex; gap: 8px; align-items: center; margin: 8px 0; flex-wrap: wrap; }
  #reply { white-space: pre-wrap; min-height: 1.5em; padding: 6px 0; }
  #tokens { line-height: 2.1; }
  .tok { display: inline-block; padding: 0 3px; margin: 1px; border-radius: 3px; border: 1px solid var(--line); cursor: pointer;
         white-space: pre; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; background: #fff; }
  .tok.reply { border-color: #9fb4e8; }
  .tok.sel { outline: 2px solid var(--accent); }
  .tok.pending { border-style: dashed; }
  .seg { color: var(--muted); font-size: 11px; margin: 6px 0 2px; }
  #detail .label { color: var(--muted); font-size: 12px; }
  #explanation { white-space: pre-wrap; margin: 6px 0 10px; }
  table.scores td { padding: 2px 10px 2px 0; font-variant-numeric: tabular-nums; }
  progress { width: 220px; }
  #status { color: var(--muted); font-size: 12px; }
  .err { color: #b3261e; }
</style>
</head>
<body>
<header><h1>nla serve</h1><span id="models"></span></header>
<main>
  <div>
    <section>
      <h2>Ask</h2>
      <textarea id="question" placeholder="Ask the target model a question">What is the capital of France?</textarea>
      <div class="row">
        <button id="ask">Ask</button>
        <label>max tokens <input id="maxTokens" type="number" value="32" min="1" max="4096" style="width:70px"></label>
        <span id="status"></span>
      </div>
      <div id="reply"></div>
    </section>
    <section style="margin-top:14px">
      <h2>Conversation as tokens</h2>
      <div class="row">
        <button id="explainAll" class="secondary" disabled>Explain all</button>
        <button id="cancel" class="secondary" disabled>Cancel</button>
        <progress id="progress" value="0" max="1"></progress>
        <span id="progressText"></span>
        <button id="export" class="secondary" disabled>Export JSON</button>
        <label class="secondary">Open JSON <input id="open" type="file" accept="application/json,.json"></label>
      </div>
      <div id="tokens"><span class="label">Ask a question, then click any token.</span></div>
    </section>
  </div>
  <section id="detail">
    <h2>Explanation</h2>
    <div id="which" class="label">No token selected.</div>
    <div id="explanation"></div>
    <table class="scores">
      <tr><td>mse_nrm</td><td id="mse_nrm">–</td></tr>
      <tr><td>cos</td><td id="cos">–</td></tr>
      <tr><td>fve_nrm</td><td id="fve_nrm">–</td></tr>
    </table>
    <div id="warnings" class="label"></div>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let conv = null;          // {ids, tokens, promptLength}
let report = null;        // the report being built / shown (same JSON as `nla explain --json`)
let selected = null;
let explainAbort = null;
let meta = null;

function authHeaders() {
  const k = sessionStorage.getItem("nlaKey");
  return k ? {"Authorization": "Bearer " + k} : {};
}
async function api(path, body, opts = {}) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const r = await fetch(path, {method: body === undefined ? "GET" : "POST",
      headers: Object.assign({"Content-Type": "application/json"}, authHeaders()),
      body: body === undefined ? undefined : JSON.stringify(body), signal: opts.signal});
    if (r.status === 401 && attempt === 0) {
      const k = prompt("This server needs an API key:");
      if (k) { sessionStorage.setItem("nlaKey", k); continue; }
    }
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try { msg = (await r.json()).error.message; } catch (e) {}
      throw new Error(msg);
    }
    return r;
  }
}
// Server-sent events over fetch: calls on(event, data) per event.
async function sse(path, body, on, signal) {
  const r = await api(path, body, {signal});
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += dec.decode(value, {stream: true});
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
      let ev = "message", data = "";
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event: ")) ev = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      const obj = data ? JSON.parse(data) : null;
      if (ev === "error") throw new Error(obj.error.message);
      on(ev, obj);
    }
  }
}
function fmt(x) { return (x === null || x === undefined) ? "–" : Number(x).toFixed(4); }
function colour(row) {
  if (!row || row.cos === null || row.cos === undefined) return "";
  const v = (row.fve_nrm !== null && row.fve_nrm !== undefined) ? row.fve_nrm : row.cos;
  const t = Math.max(0, Math.min(1, v));
  return "hsl(" + Math.round(t * 120) + ", 70%, 82%)";
}
function rowOf(p) { return report ? report.positions.find((r) => r.position === p) : null; }

function renderTokens() {
  const box = $("tokens");
  box.innerHTML = "";
  if (!conv) return;
  let seg = null;
  conv.ids.forEach((id, p) => {
    const s = p < conv.promptLength ? "PROMPT" : "REPLY";
    if (s !== seg) { seg = s; const d = document.createElement("div"); d.className = "seg"; d.textContent = s; box.appendChild(d); }
    const span = document.createElement("span");
    span.className = "tok" + (s === "REPLY" ? " reply" : "") + (p === selected ? " sel" : "");
    span.dataset.pos = p;
    span.title = "position " + p + ", id " + id;
    span.textContent = conv.tokens[p] === undefined ? "#" + id : conv.tokens[p].replace(/\n/g, "\u21b5");
    const row = rowOf(p);
    if (row) span.style.background = colour(row);
    span.addEventListener("click", () => explainOne(p));
    box.appendChild(span);
  });
  $("explainAll").disabled = !!explainAbort;
  $("export").disabled = !report;
}
function showDetail(p) {
  const row = rowOf(p);
  $("which").textContent = "position " + p + " " + (conv && conv.tokens[p] !== undefined ? JSON.stringify(conv.tokens[p]) : "");
  if (!row) { $("explanation").textContent = "…"; ["mse_nrm", "cos", "fve_nrm"].forEach((k) => $(k).textContent = "–"); return; }
  $("explanation").textContent = row.error ? ("failed: " + row.error) : (row.explanation || "");
  $("mse_nrm").textContent = fmt(row.mse_nrm);
  $("cos").textContent = fmt(row.cos);
  $("fve_nrm").textContent = (row.fve_nrm === null || row.fve_nrm === undefined) ? (row.error ? "–" : "no baseline") : fmt(row.fve_nrm);
  $("warnings").textContent = (row.warnings || []).join("; ");
}
function mergeRows(rows, base) {
  if (!report || report.ids.join() !== conv.ids.join()) {
    report = Object.assign({}, base, {positions: []});
  }
  for (const r of rows) {
    const i = report.positions.findIndex((x) => x.position === r.position);
    if (i >= 0) report.positions[i] = r; else report.positions.push(r);
  }
  report.positions.sort((a, b) => a.position - b.position);
}
function setStatus(t, err) { $("status").textContent = t; $("status").className = err ? "err" : ""; }

async function ask() {
  const q = $("question").value.trim();
  if (!q) return;
  $("ask").disabled = true; $("reply").textContent = ""; setStatus("generating…");
  try {
    await sse("/api/chat", {messages: [{role: "user", content: q}], max_new_tokens: Number($("maxTokens").value) || 32, stream: true},
      (ev, d) => {
        if (ev === "token") $("reply").textContent += d.text;
        if (ev === "done") {
          conv = {ids: d.conversation_ids, tokens: d.tokens, promptLength: d.prompt_length};
          report = null; selected = null;
          renderTokens();
          setStatus(d.ids.length + " tokens (" + d.finish_reason + ")");
        }
      });
  } catch (e) { setStatus(e.message, true); }
  $("ask").disabled = false;
}
async function explainOne(p) {
  selected = p; renderTokens(); showDetail(p);
  if (rowOf(p)) return;
  const span = document.querySelector('.tok[data-pos="' + p + '"]');
  if (span) span.classList.add("pending");
  try {
    const r = await api("/api/explain", {ids: conv.ids, prompt_length: conv.promptLength, positions: [p], max_new_tokens: 48});
    const rep = await r.json();
    mergeRows(rep.positions, rep);
    renderTokens();
    if (selected === p) showDetail(p);
  } catch (e) { $("explanation").textContent = "failed: " + e.message; }
}
async function explainAll() {
  if (!conv) return;
  explainAbort = new AbortController();
  $("explainAll").disabled = true; $("cancel").disabled = false;
  $("progress").value = 0; $("progressText").textContent = "starting…";
  try {
    await sse("/api/explain", {ids: conv.ids, prompt_length: conv.promptLength, positions: "all", max_new_tokens: 48, stream: true},
      (ev, d) => {
        if (ev === "progress") {
          $("progress").max = Math.max(1, d.total); $("progress").value = d.done;
          $("progressText").textContent = d.phase + " " + d.done + "/" + d.total;
        } else if (ev === "report") {
          report = d; renderTokens(); if (selected !== null) showDetail(selected);
          $("progressText").textContent = "done: " + d.positions.length + " positions";
        }
      }, explainAbort.signal);
  } catch (e) {
    $("progressText").textContent = e.name === "AbortError" ? "cancelled" : ("failed: " + e.message);
  }
  explainAbort = null; $("cancel").disabled = true; renderTokens();
}
function exportJSON() {
  if (!report) return;
  const blob = new Blob([JSON.stringify(report, null, 1)], {type: "application/json"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = "nla-report.json"; a.click();
}
async function openJSON(ev) {
  const f = ev.target.files[0];
  if (!f) return;
  try {
    const rep = JSON.parse(await f.text());
    if (!Array.isArray(rep.ids) || !Array.isArray(rep.positions)) throw new Error("not an nla explain report (needs ids and positions)");
    const tokens = [];
    for (const r of rep.positions) tokens[r.position] = r.token;
    conv = {ids: rep.ids, tokens, promptLength: rep.prompt_length || 0};
    report = rep; selected = null; renderTokens();
    setStatus("opened " + f.name);
  } catch (e) { setStatus("cannot open " + f.name + ": " + e.message, true); }
}
$("ask").addEventListener("click", ask);
$("explainAll").addEventListener("click", explainAll);
$("cancel").addEventListener("click", () => explainAbort && explainAbort.abort());
$("export").addEventListener("click", exportJSON);
$("open").addEventListener("change", openJSON);
api("/api/models").then((r) => r.json()).then((m) => {
  meta = m;
  $("models").textContent = m.models.map((x) => x.name + ": " + x.path.split("/").slice(-2).join("/")).join(" · ") +
    (m.layer !== undefined ? " · layer " + m.layer : "") + (m.mode === "nla" && (m.fve_baseline === null) ? " · no fve baseline" : "");
}).catch((e) => setStatus(e.message, true));
</script>
</body>
</html>
"""#
}
