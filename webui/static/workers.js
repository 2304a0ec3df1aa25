// One card per agent, and one more per parallel run of it (claude#2): status, activity,
// progress, load share, CPU and memory sparklines.
import { $, cap, el, fmtBytes, pct, pill } from "./dom.js";
import { describe } from "./eventlog.js";
import { AGENTS, SPARK_WINDOW_MS, runName, samples, state } from "./store.js";

// Each agent's card, then one per further run slot its workers reported, in slot order.
function runs() {
  const names = [];
  AGENTS.forEach((agent) => {
    names.push(agent);
    Object.values(state.workers)
      .filter((w) => w.agent === agent && w.slot > 1)
      .sort((a, b) => a.slot - b.slot)
      .forEach((w) => names.push(runName(agent, w.slot)));
  });
  return names;
}

function rolesOf(agent) {
  const roles = new Set();
  ((state.session && state.session.assignments) || []).forEach((a) => { if (a.agent === agent) roles.add(a.role); });
  return Array.from(roles).join(", ");
}

function lastEventOf(run, pred) {
  for (let i = state.events.length - 1, n = 0; i >= 0 && n < 2000; i--, n++) {
    const e = state.events[i];
    if (runName(e.agent, e.slot) === run && (!pred || pred(e))) return e;
  }
  return null;
}

export function renderWorkers() {
  const root = $("workers");
  runs().forEach((run) => {
    const agent = run.split("#")[0];
    const card = root.querySelector('[data-agent="' + run + '"]') || buildWorkerCard(root, run, agent);
    const w = state.workers[run];
    const status = w ? w.status : "idle";
    const statusPill = card.querySelector(".w-status");
    statusPill.className = "pill w-status status-" + status;
    statusPill.dataset.status = status;
    statusPill.textContent = w ? cap(status) : "Not started";
    card.querySelector(".role").textContent = rolesOf(agent);

    const last = lastEventOf(run);
    const activity = (w && w.last_activity) || (last && describe(last)) || "";
    const act = card.querySelector(".activity");
    act.textContent = activity || "No activity yet";
    act.classList.toggle("none", !activity);
    act.title = activity;

    let progress = w && w.last_progress !== null ? w.last_progress : null;
    if (progress === null) {
      const pe = lastEventOf(run, (e) => e.payload && typeof e.payload.progress === "number");
      if (pe) progress = pe.payload.progress;
    }
    card.querySelector(".p-fill").style.width = (progress || 0) + "%";
    card.querySelector(".p-value").textContent = progress === null ? "—" : progress + "%";

    const share = ((state.session && state.session.shares) || []).find((s) => s.agent === agent);
    const note = card.querySelector(".share-note");
    if (share) {
      const actual = share.actual_by_tokens !== null && !share.actual_by_time ? share.actual_by_tokens : share.actual_by_time;
      const band = card.querySelector(".band");
      band.style.left = share.target_min * 100 + "%";
      band.style.width = Math.max(0.5, (share.target_max - share.target_min) * 100) + "%";
      card.querySelector(".mark").style.width = Math.min(100, (actual || 0) * 100) + "%";
      card.querySelector(".s-value").textContent = pct(actual);
      const where = actual < share.target_min - 1e-9 ? "under" : actual > share.target_max + 1e-9 ? "over" : "in";
      note.className = "share-note " + where;
      note.textContent = "Target " + pct(share.target_min) + "–" + pct(share.target_max) + " · planned " + pct(share.planned) +
        " · " + (where === "in" ? "on target" : where === "under" ? "below target" : "above target");
    } else {
      card.querySelector(".s-value").textContent = "—";
      note.className = "share-note";
      note.textContent = "No share measured yet";
    }

    const runSamples = samples[run] || [];
    renderSpark(card.querySelector(".spark-cpu"), runSamples.map((s) => ({ at: s.at, v: s.cpu })), (v) => v.toFixed(0) + "%", 100);
    renderSpark(card.querySelector(".spark-mem"), runSamples.map((s) => ({ at: s.at, v: s.rss })), fmtBytes, null);

    const ids = [];
    if (w && w.pid) ids.push("pid " + w.pid);
    if (w && w.assignment_id) ids.push(w.assignment_id);
    ids.push(((w && w.events_recorded) || 0).toLocaleString() + " events");
    card.querySelector(".ids").textContent = ids.join(" · ");
    const running = status === "running" || status === "starting";
    card.querySelector('[data-action="pause"]').disabled = !running;
    card.querySelector('[data-action="resume"]').disabled = status !== "paused";
    card.querySelector('[data-action="stop"]').disabled = !(running || status === "paused");
  });
}

// The card of one run; its buttons act on the agent (pausing claude pauses each of its runs).
function buildWorkerCard(root, run, agent) {
  const card = el("article", "card worker");
  card.dataset.agent = run;
  const head = el("div", "worker-head");
  head.append(el("h3", null, run), el("span", "role"), pill("Not started", "idle", "w-status"));
  const act = el("div", "activity none", "No activity yet");

  const prog = el("div", "metric");
  const ptrack = el("div", "track");
  ptrack.append(el("div", "fill p-fill"));
  prog.append(el("span", "name", "Progress"), ptrack, el("span", "value p-value", "—"));

  const share = el("div", "metric");
  const strack = el("div", "track share");
  strack.append(el("div", "fill mark"), el("div", "band"));
  share.append(el("span", "name", "Load share"), strack, el("span", "value s-value", "—"));
  const note = el("div", "share-note");

  const sparks = el("div", "sparks");
  sparks.append(sparkBox("CPU", "spark-cpu"), sparkBox("Memory", "spark-mem"));

  const foot = el("div", "worker-foot");
  foot.append(el("span", "ids"));
  [["pause", "Pause"], ["resume", "Resume"], ["review", "Review"], ["stop", "Stop"]].forEach(([action, label]) => {
    const b = el("button", "btn small" + (action === "stop" ? " danger" : ""), label);
    b.type = "button";
    b.dataset.action = action;
    b.dataset.agent = agent;
    b.setAttribute("aria-label", label + " " + agent);
    foot.append(b);
  });
  card.append(head, act, prog, share, note, sparks, foot);
  root.append(card);
  return card;
}

function sparkBox(label, cls) {
  const box = el("div", "spark " + cls);
  const top = el("div", "top");
  top.append(el("span", null, label), el("b", "now", "—"));
  box.append(top, el("div", "nodata", "No samples yet"));
  return box;
}

const SVGNS = "http://www.w3.org/2000/svg";
// points: [{at, v}] in time order; the line spans the run's last SPARK_WINDOW_MS.
function renderSpark(box, points, fmt, fixedMax) {
  const known = points.filter((p) => typeof p.v === "number");  // null: the tree could not be read
  const vals = known.map((p) => p.v);
  const now = box.querySelector(".now");
  let svg = box.querySelector("svg");
  const nodata = box.querySelector(".nodata");
  if (vals.length === 0) {
    now.textContent = "—";
    if (svg) svg.remove();
    nodata.hidden = false;
    return;
  }
  nodata.hidden = true;
  now.textContent = fmt(vals[vals.length - 1]);
  if (!svg) {
    svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("viewBox", "0 0 100 30");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.append(document.createElementNS(SVGNS, "polygon"), document.createElementNS(SVGNS, "polyline"));
    box.append(svg);
  }
  const max = Math.max(fixedMax || 0, ...vals) || 1;
  const start = known[known.length - 1].at - SPARK_WINDOW_MS;
  const x = (at) => (Math.max(0, at - start) / SPARK_WINDOW_MS * 100).toFixed(2);
  const y = (v) => (29 - (v / max) * 27).toFixed(2);
  // A sample holds until the next one (the next is told once a figure moved): steps, not slopes.
  const pts = [];
  known.forEach((p, i) => {
    if (i > 0) pts.push(x(p.at) + "," + y(known[i - 1].v));
    pts.push(x(p.at) + "," + y(p.v));
  });
  if (known.length === 1) pts.unshift("0," + y(known[0].v));
  svg.querySelector("polyline").setAttribute("points", pts.join(" "));
  svg.querySelector("polygon").setAttribute("points", pts[0].split(",")[0] + ",30 " + pts.join(" ") + " 100,30");
}
