// `orchestrate serve`: every session of the workspace, newest first; a row opens the session.
import { $, cap, el, fmtTime, pill } from "./dom.js";
import { api, noTokenBanner, token } from "./api.js";

const REFRESH_MS = 2000;

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  let s = Math.round(seconds);
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(s).padStart(2, "0");
}

function row(session) {
  const tr = el("tr", "session-row");
  tr.dataset.session = session.session_id;
  tr.tabIndex = 0;
  const link = el("a", null, session.session_id);
  link.href = "/session?session=" + encodeURIComponent(session.session_id);
  const cells = [
    link,
    el("span", "task-cell", session.task),
    pill(session.live ? "Live · " + cap(session.status) : cap(session.status), session.live ? "running" : session.status),
    el("span", null, fmtTime(session.created_at)),
    el("span", null, duration(session.duration_s)),
    el("span", null, session.exit_code === null || session.exit_code === undefined ? "—" : String(session.exit_code)),
    el("span", null, session.cost_usd ? "$" + session.cost_usd.toFixed(4) : "—"),
    el("span", null, session.tokens ? session.tokens.toLocaleString() : "—"),
    el("span", session.open_questions ? "needs-you" : null, session.open_questions ? session.open_questions + " open" : "—"),
    el("code", null, session.branch || "—"),
  ];
  cells.forEach((cell) => { const td = el("td"); td.append(cell); tr.append(td); });
  tr.onclick = (ev) => { if (ev.target.tagName !== "A") location.href = link.href; };
  tr.onkeydown = (ev) => { if (ev.key === "Enter") location.href = link.href; };
  return tr;
}

async function refresh() {
  const q = new URLSearchParams({ q: $("filter-text").value, status: $("filter-status").value });
  try {
    const data = await api("GET", "/api/sessions?" + q);
    $("workspace").textContent = data.workspace;
    const body = $("sessions");
    body.replaceChildren(...(data.sessions.length ? data.sessions.map(row)
      : [(() => { const tr = el("tr"); const td = el("td", "empty", "No session matches."); td.colSpan = 10; tr.append(td); return tr; })()]));
    $("session-count").textContent = String(data.sessions.length);
    const live = data.sessions.filter((s) => s.live).length;
    document.title = (live ? "(" + live + " live) " : "") + "Orchestrator · sessions";
  } catch (e) { /* api() shows why (a bad token); the next round tries again */ }
}

if (token) {
  $("filter-text").addEventListener("input", refresh);
  $("filter-status").addEventListener("change", refresh);
  refresh();
  setInterval(refresh, REFRESH_MS);
} else {
  noTokenBanner();
}
