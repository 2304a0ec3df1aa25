// Orchestrator dashboard: the entry module. Plain ES modules, no build step, no external assets.
//
//   api.js      the token (kept in sessionStorage) and the JSON API
//   socket.js   the WebSocket: snapshot, numbered deltas, resume after a drop
//   store.js    the state, and what each frame of the wire contract does to it
//   workers.js, inbox.js, reviews.js, changes.js, eventlog.js   the parts of the page
//   notify.js   browser notifications, once the user turns them on
import { $, cap, showBanner, toast } from "./dom.js";
import { api } from "./api.js";
import { connect, onBannerHidden, send } from "./socket.js";
import { TERMINAL, markDirty, onRender, openQuestions, sessionStatus, state } from "./store.js";
import { renderWorkers } from "./workers.js";
import { renderInbox } from "./inbox.js";
import { renderDecision, renderPlan, renderReviews } from "./reviews.js";
import { renderChanges, setupChanges } from "./changes.js";
import { setupNotify } from "./notify.js";
import { replaySession, startReplay } from "./replay.js";
import { appendLog, hideDetail, log, onLogScroll, rebuildLog, showDetail, togglePause } from "./eventlog.js";

function render(parts) {
  if (parts.has("session")) renderSession();
  if (parts.has("workers")) renderWorkers();
  if (parts.has("inbox")) renderInbox();
  if (parts.has("decision")) renderDecision();
  if (parts.has("reviews")) renderReviews();
  if (parts.has("plan")) renderPlan();
  if (parts.has("changes")) renderChanges();
  if (parts.has("log-reset")) rebuildLog();
  else if (parts.has("log")) appendLog();
  if (parts.has("session") || parts.has("inbox")) renderTitle();
  $("event-count").textContent = state.eventsSeen.toLocaleString();
}

// The tab's title says when the session waits on the user, even from another tab.
function renderTitle() {
  const waiting = openQuestions().length;
  const s = state.session;
  const parts = [cap(sessionStatus())];
  if (s) parts.push(s.session_id);
  parts.push("Orchestrator");
  document.title = (waiting ? "(" + waiting + ") needs you · " : "") + parts.join(" · ");
}

function endedBanner() {
  const status = sessionStatus();
  if (TERMINAL.includes(status) && !replaySession) {
    showBanner("ended", "The session is " + status + ". This page keeps showing its final state until you close the dashboard.");
  }
}

function renderSession() {
  const s = state.session;
  const status = sessionStatus();
  const badge = $("session-status");
  badge.className = "pill status-" + status;
  badge.dataset.status = status;
  badge.textContent = cap(status);
  $("session-id").textContent = s ? s.session_id : "—";
  if (s) {
    $("task").textContent = s.task;
    $("plan-summary").textContent = s.plan_summary;
    $("target").textContent = s.target;
    $("target").title = s.target;
    $("plan-source").textContent = s.plan_source ? cap(s.plan_source.replace("_", " ")) : "—";
    const done = s.assignments.filter((a) => a.status === "completed").length;
    $("assignment-count").textContent = s.assignments.length ? done + " / " + s.assignments.length + " done" : "—";
  }
  const over = TERMINAL.includes(status);
  $("close-dashboard").hidden = !over;
  document.querySelectorAll("#session-controls [data-action]").forEach((b) => { b.disabled = over; });
  if (over && $("banner").dataset.kind !== "lost") endedBanner();
  tickElapsed();
}

function tickElapsed() {
  const s = state.session;
  if (!s) return;
  const start = Date.parse(s.created_at);
  const over = TERMINAL.includes(s.status);
  const end = s.ended_at ? Date.parse(s.ended_at) : over ? Date.parse(s.updated_at) : Date.now() + state.clockOffset;
  let secs = Math.max(0, Math.floor((end - start) / 1000));
  const d = Math.floor(secs / 86400); secs -= d * 86400;
  const h = Math.floor(secs / 3600); secs -= h * 3600;
  const m = Math.floor(secs / 60); secs -= m * 60;
  $("elapsed").textContent = d ? d + "d " + h + "h " + m + "m"
    : (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(secs).padStart(2, "0");
}

async function control(action, agent, button) {
  if (button) button.disabled = true;
  try {
    await api("POST", "/api/control/" + action, agent ? { agent } : {});
    toast(cap(action) + " sent" + (agent ? " to " + agent : " for the session"));
  } catch (e) {
    toast("Could not " + action + ": " + e.message, true);
  } finally {
    if (button) setTimeout(() => { button.disabled = false; }, 600);
  }
}

function armStop(button, agent) {
  if (button.classList.contains("armed")) {
    button.classList.remove("armed");
    button.textContent = button.dataset.label;
    control("stop", agent, button);
    return;
  }
  button.dataset.label = button.textContent;
  button.classList.add("armed");
  button.textContent = "Click again to stop";
  setTimeout(() => {
    if (button.classList.contains("armed")) { button.classList.remove("armed"); button.textContent = button.dataset.label; }
  }, 4000);
}

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (button) {
    const agent = button.dataset.agent || null;
    if (button.dataset.action === "stop") armStop(button, agent);
    else control(button.dataset.action, agent, button);
    return;
  }
  const row = ev.target.closest(".row");
  if (row) showDetail(log.filtered[Number(row.dataset.index)]);
});
$("detail-close").onclick = hideDetail;
$("close-dashboard").onclick = async () => {
  try { await api("POST", "/api/close"); showBanner("ended", "The dashboard is closing. You can close this tab."); }
  catch (e) { toast("Could not close: " + e.message, true); }
};
["filter-agent", "filter-type"].forEach((id) => $(id).addEventListener("change", () => markDirty("log-reset")));
let searchTimer = null;
$("filter-text").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(() => markDirty("log-reset"), 150); });
$("pause-scroll").onclick = togglePause;
setupChanges();
setupNotify();
$("log").addEventListener("scroll", onLogScroll, { passive: true });
setInterval(tickElapsed, 1000);
setInterval(() => send({ type: "ping" }), 25000);

window.orchestrator = { state, log };   // for debugging from the console and for tests
onRender(render);
onBannerHidden(endedBanner);
renderWorkers();
// Served by `orchestrate serve` (?session=<id>): the session's files, read-only; else live.
if (replaySession) startReplay().catch((e) => showBanner("lost", "Cannot open the session: " + e.message));
else connect();
