// The event log: windowed (only the visible rows exist in the DOM), filtered, with the raw line.
import { $, el, fmtClock, fmtTime } from "./dom.js";
import { state } from "./store.js";

const ROW_H = 26;
export const log = { filtered: [], scanned: 0, paused: false, unseen: 0, selected: null, first: null };

export function describe(e) {
  const p = e.payload;
  if (p.text) return p.text;
  if (p.tool) return p.tool + (p.file ? " " + p.file : "");
  if (p.file) return p.file;
  if (p.kind) return p.kind;
  return e.type;
}

function filters() {
  return { agent: $("filter-agent").value, type: $("filter-type").value, text: $("filter-text").value.trim().toLowerCase() };
}

function matches(e, f) {
  if (f.agent && e.agent !== f.agent) return false;
  if (f.type && e.type !== f.type) return false;
  if (f.text) {
    const p = e.payload;
    const hay = [p.text, p.tool, p.file, p.kind, e.type, e.agent].join(" ").toLowerCase();
    if (hay.indexOf(f.text) < 0) return false;
  }
  return true;
}

export function rebuildLog() {
  const f = filters();
  log.filtered = state.events.filter((e) => matches(e, f));
  log.scanned = state.events.length;
  log.first = state.events[0];
  log.unseen = 0;
  drawLog(true);
}

export function appendLog() {
  // state.events may have been trimmed at the front; rebuild if our scan position is off.
  if (state.events[0] !== log.first || log.scanned > state.events.length) { rebuildLog(); return; }
  const f = filters();
  let added = 0;
  for (let i = log.scanned; i < state.events.length; i++) {
    if (matches(state.events[i], f)) { log.filtered.push(state.events[i]); added++; }
  }
  log.scanned = state.events.length;
  if (log.paused) log.unseen += added;
  drawLog(!log.paused);
}

export function drawLog(stick) {
  const box = $("log");
  $("log-spacer").style.height = log.filtered.length * ROW_H + "px";
  if (stick) box.scrollTop = box.scrollHeight;
  drawRows();
  const total = state.events.length;
  $("log-count").textContent = log.filtered.length.toLocaleString() + (log.filtered.length !== total ? " of " + total.toLocaleString() : "") +
    " events" + (log.paused && log.unseen ? " · " + log.unseen + " new below" : "");
}

export function drawRows() {
  const box = $("log");
  const rows = $("log-rows");
  const first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - 10);
  const last = Math.min(log.filtered.length, Math.ceil((box.scrollTop + box.clientHeight) / ROW_H) + 10);
  rows.style.top = first * ROW_H + "px";
  const frag = document.createDocumentFragment();
  for (let i = first; i < last; i++) frag.append(buildRow(log.filtered[i], i));
  rows.replaceChildren(frag);
}

function buildRow(e, index) {
  const row = el("div", "row t-" + e.type);
  row.dataset.index = index;
  if (log.selected === e) row.classList.add("selected");
  row.append(el("span", "ts", fmtClock(e.timestamp)), el("span", "ag agent-" + e.agent, e.agent),
    el("span", "ty ty-" + e.type, e.type), el("span", "tx", lineText(e)));
  row.title = "Click to see the raw line";
  return row;
}

function lineText(e) {
  const p = e.payload;
  let text = describe(e);
  if (typeof p.progress === "number") text = p.progress + "% · " + text;
  if (p.kind && p.kind !== "text" && p.text) text = "[" + p.kind + "] " + text;
  return String(text).replace(/\s+/g, " ").slice(0, 400);
}

export function showDetail(e) {
  log.selected = e;
  $("log-detail").hidden = false;
  $("detail-title").textContent = e.agent + " · " + e.type + " · #" + (e.seq || "?") + " · " + fmtTime(e.timestamp);
  let raw = e.raw;
  try { if (raw) raw = JSON.stringify(JSON.parse(raw), null, 2); } catch (err) { /* not JSON: as it was */ }
  const copy = Object.assign({}, e);
  delete copy.raw;
  $("detail-body").textContent = "Event\n" + JSON.stringify(copy, null, 2) +
    (e.raw !== undefined ? "\n\nRaw line" + (e.raw_cut ? " (first part of " + e.raw_cut + " characters; the whole line is in " + e.agent + ".jsonl)" : "") + "\n" + raw : "") +
    (e.raw_file ? "\n\nLong line kept in " + e.raw_file : "");
  drawRows();
}

export function hideDetail() {
  $("log-detail").hidden = true;
  log.selected = null;
  drawRows();
}

export function togglePause() {
  log.paused = !log.paused;
  $("pause-scroll").setAttribute("aria-pressed", String(log.paused));
  $("pause-scroll").textContent = log.paused ? "Resume scrolling" : "Pause scrolling";
  if (!log.paused) { log.unseen = 0; drawLog(true); } else drawLog(false);
}

export function onLogScroll() {
  const box = $("log");
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - ROW_H;
  // Scrolling up by hand pauses following.
  if (!atBottom && !log.paused) togglePause();
  requestAnimationFrame(drawRows);
}
