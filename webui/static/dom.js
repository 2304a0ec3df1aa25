// Small DOM and formatting helpers shared by every part of the page.

export const $ = (id) => document.getElementById(id);

export function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function pill(label, status, extra) {
  const name = String(status || "unknown").toLowerCase();
  const node = el("span", "pill status-" + name + (extra ? " " + extra : ""), label);
  node.dataset.status = name;
  return node;
}

export const cap = (s) => (s ? String(s).charAt(0).toUpperCase() + String(s).slice(1) : "");
export const pct = (x) => (x === null || x === undefined || isNaN(x) ? "—" : Math.round(x * 100) + "%");

export function fmtClock(ts) {
  const d = new Date(ts);
  if (isNaN(d)) return "";
  return d.toLocaleTimeString([], { hour12: false });
}

export function fmtTime(ts) {
  const d = new Date(ts);
  if (!ts || isNaN(d)) return "";
  return d.toLocaleString([], { hour12: false, month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtBytes(b) {
  if (b === null || b === undefined) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return b.toFixed(b < 10 && i ? 1 : 0) + " " + units[i];
}

export function toast(text, isError) {
  const node = el("div", "toast" + (isError ? " error" : ""), text);
  $("toasts").append(node);
  setTimeout(() => node.remove(), isError ? 6000 : 3000);
}

let bannerTimer = null;
export function showBanner(kind, text, hideAfter, onHide) {
  const banner = $("banner");
  clearTimeout(bannerTimer);
  banner.dataset.kind = kind;
  banner.textContent = text;
  banner.hidden = false;
  if (hideAfter) bannerTimer = setTimeout(() => { banner.hidden = true; if (onHide) onHide(); }, hideAfter);
}
