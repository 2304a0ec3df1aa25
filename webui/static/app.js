/* Orchestrator dashboard. Plain JavaScript, no build step, no external assets.
 *
 * One WebSocket (/ws) feeds the page: a "snapshot" frame first, then deltas numbered by
 * "seq". After a drop the page reconnects with ?since=<last seq>&epoch=<epoch> and the
 * gateway replays what was missed (or sends a fresh snapshot). Controls and answers are
 * POSTed to the JSON API with the session token.
 */
(function () {
  "use strict";

  const AGENTS = ["gemini", "codex", "claude"];
  const MAX_EVENTS = 20000;       // kept in memory; the log only renders what is visible
  const MAX_SAMPLES = 90;         // per agent, for the sparklines
  const ROW_H = 26;

  // --- token: from ?token=, kept for this tab, sent on every call ---------------------------
  const params = new URLSearchParams(location.search);
  let token = params.get("token") || "";
  try {
    if (token) sessionStorage.setItem("orchestrate_token", token);
    else token = sessionStorage.getItem("orchestrate_token") || "";
  } catch (e) { /* storage disabled: the HttpOnly cookie still works */ }

  // --- state --------------------------------------------------------------------------------
  const state = {
    seq: null, epoch: null, session: null, ended: null, workers: {}, facts: {},
    events: [], eventsSeen: 0, clockOffset: 0, pendingAnswers: {}, reviews: [],
  };
  const samples = {};             // agent -> [{cpu, rss}]
  const dirty = new Set();
  let frameScheduled = false;

  const $ = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function pill(label, status, extra) {
    const node = el("span", "pill status-" + String(status || "unknown").toLowerCase() + (extra ? " " + extra : ""), label);
    node.dataset.status = String(status || "unknown").toLowerCase();
    return node;
  }
  const cap = (s) => (s ? String(s).charAt(0).toUpperCase() + String(s).slice(1) : "");
  const pct = (x) => (x === null || x === undefined || isNaN(x) ? "—" : Math.round(x * 100) + "%");

  function markDirty(...parts) {
    parts.forEach((p) => dirty.add(p));
    if (!frameScheduled) {
      frameScheduled = true;
      requestAnimationFrame(render);
    }
  }

  // --- HTTP ---------------------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (token) headers["X-Orchestrate-Token"] = token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      if (response.status === 401) showBanner("auth", "This page has no valid token. Open the address the launcher printed (it ends with ?token=…).");
      throw new Error((data && data.error) || response.status + " " + response.statusText);
    }
    return data;
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

  async function answer(question, body, node) {
    node.querySelectorAll("button, textarea").forEach((b) => { b.disabled = true; });
    try {
      await api("POST", "/api/answer", Object.assign({ question_id: String(question.id) }, body));
      state.pendingAnswers[question.id] = true;
      node.classList.add("sent");
      toast("Answer sent");
    } catch (e) {
      node.querySelectorAll("button, textarea").forEach((b) => { b.disabled = false; });
      toast("Answer not sent: " + e.message, true);
    }
  }

  let reviewsTimer = null;
  function refreshReviews() {
    clearTimeout(reviewsTimer);
    reviewsTimer = setTimeout(async () => {
      try {
        const data = await api("GET", "/api/reviews");
        state.reviews = data.reviews || [];
        markDirty("reviews");
      } catch (e) { /* shown by the banner if it is the token */ }
    }, 250);
  }

  // --- WebSocket ----------------------------------------------------------------------------
  let ws = null;
  let attempts = 0;
  let everConnected = false;
  let wasLost = false;
  let bannerTimer = null;

  function connect() {
    const q = new URLSearchParams();
    if (token) q.set("token", token);
    if (state.seq !== null) { q.set("since", state.seq); q.set("epoch", state.epoch || ""); }
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws?" + q.toString();
    setConn("connecting", attempts ? "Reconnecting" : "Connecting");
    try { ws = new WebSocket(url); } catch (e) { scheduleReconnect(); return; }
    let missed = 0;
    ws.onopen = () => {
      attempts = 0;
      setConn("live", "Live");
    };
    ws.onmessage = (msg) => {
      let frame;
      try { frame = JSON.parse(msg.data); } catch (e) { return; }
      // Under load the gateway sends the frames that queued up as one "batch" message.
      const frames = frame.type === "batch" ? frame.data : [frame];
      for (const one of frames) receiveFrame(one);
    };
    const receiveFrame = (frame) => {
      if (frame.type === "hello") missed = frame.data.missed || 0;
      handleFrame(frame);
      if ((frame.type === "hello" || frame.type === "snapshot") && wasLost) {
        wasLost = false;
        showBanner("back", frame.type === "hello"
          ? "Connection is back. Caught up on " + missed + " missed update" + (missed === 1 ? "" : "s") + "."
          : "Connection is back. The page was refreshed from a full snapshot.", 4000);
      }
      everConnected = true;
    };
    ws.onclose = () => {
      ws = null;
      if (everConnected || attempts > 0) wasLost = true;
      setConn("lost", "Disconnected");
      scheduleReconnect();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  function scheduleReconnect() {
    attempts += 1;
    const delay = Math.min(5000, 400 * Math.pow(1.8, attempts - 1));
    showBanner("lost", "Connection to the orchestrator lost — reconnecting in " + Math.ceil(delay / 1000) +
      "s (attempt " + attempts + "). The page shows the last known state.");
    if (attempts === 2) api("GET", "/api/session").catch(() => {}); // explains a bad token
    setTimeout(connect, delay);
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function setConn(kind, text) {
    $("conn").dataset.state = kind;
    $("conn-text").textContent = text;
  }

  function showBanner(kind, text, hideAfter) {
    const banner = $("banner");
    clearTimeout(bannerTimer);
    banner.dataset.kind = kind;
    banner.textContent = text;
    banner.hidden = false;
    if (hideAfter) bannerTimer = setTimeout(() => { banner.hidden = true; endedBanner(); }, hideAfter);
  }

  function endedBanner() {
    if (state.ended || (state.session && ["completed", "failed", "stopped"].includes(state.session.status))) {
      const status = (state.ended && state.ended.status) || state.session.status;
      showBanner("ended", "The session is " + status + ". This page keeps showing its final state until you close the dashboard.");
    }
  }

  // --- frames -------------------------------------------------------------------------------
  function handleFrame(frame) {
    const data = frame.data;
    if (frame.seq !== null && frame.seq !== undefined && frame.type !== "snapshot") {
      if (state.seq !== null && frame.seq !== state.seq + 1) {
        // A gap: something was lost between us and the gateway; ask for the whole state.
        send({ type: "resync" });
      }
      state.seq = frame.seq;
    }
    switch (frame.type) {
      case "snapshot":
        state.seq = frame.seq;
        if (state.epoch === data.epoch && state.events.length) {
          // Same gateway, we fell behind: keep what we had and add the snapshot's recent events.
          const fresh = new Set((data.events || []).map((e) => e.agent + ":" + e.seq));
          data.events = state.events.filter((e) => !fresh.has(e.agent + ":" + e.seq)).concat(data.events || []);
          if (data.events.length > MAX_EVENTS) data.events.splice(0, data.events.length - MAX_EVENTS);
        }
        state.epoch = data.epoch;
        state.session = data.session;
        state.ended = data.ended;
        state.workers = {};
        (data.workers || []).forEach((w) => { state.workers[w.agent] = w; });
        state.facts = data.facts || {};
        state.events = data.events || [];
        state.eventsSeen = data.events_seen || state.events.length;
        if (data.server_time) state.clockOffset = Date.parse(data.server_time) - Date.now();
        AGENTS.forEach((a) => { samples[a] = []; });
        Object.keys(state.facts).forEach((kind) => state.facts[kind].forEach((d) => addSample(kind, d)));
        refreshReviews();
        markDirty("session", "workers", "log-reset", "inbox", "decision", "plan");
        break;
      case "hello":
        state.epoch = data.epoch;
        break;
      case "event":
        state.events.push(data);
        state.eventsSeen += 1;
        if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
        if (data.type === "review") refreshReviews();
        markDirty("log", "workers", "counts");
        break;
      case "worker":
        state.workers[data.agent] = data;
        markDirty("workers");
        break;
      case "session": {
        const before = state.session ? (state.session.decisions || []).length : 0;
        state.session = data;
        if ((data.decisions || []).length !== before) refreshReviews();
        markDirty("session", "workers", "inbox", "decision", "plan");
        break;
      }
      case "session_ended":
        state.ended = data;
        markDirty("session");
        break;
      case "ack":
        break;
      case "error":
        toast(data.error || "The orchestrator refused a request", true);
        break;
      case "pong":
        break;
      default: {
        // Any other fact (resource samples, reviews, ...): keep the recent ones.
        const list = state.facts[frame.type] || (state.facts[frame.type] = []);
        list.push(data);
        if (list.length > 600) list.splice(0, list.length - 600);
        addSample(frame.type, data);
        if (frame.type.indexOf("review") >= 0 || frame.type.indexOf("decision") >= 0) {
          refreshReviews();
          markDirty("reviews");
        }
        markDirty("workers");
      }
    }
  }

  function addSample(kind, d) {
    if (kind.indexOf("resource") < 0 || !d) return;
    if (Array.isArray(d.agents)) { d.agents.forEach((tree) => addSample(kind, tree)); return; }  // ResourcesSampled
    if (!d.agent || !samples[d.agent]) return;
    const cpu = firstNumber(d, ["cpu_percent", "cpu"]);
    const rss = firstNumber(d, ["rss_bytes", "memory_bytes", "rss", "memory_rss"]);
    if (cpu === null && rss === null) return;
    const list = samples[d.agent];
    list.push({ cpu, rss });
    if (list.length > MAX_SAMPLES) list.shift();
  }
  function firstNumber(obj, keys) {
    for (const k of keys) if (typeof obj[k] === "number") return obj[k];
    return null;
  }

  // --- rendering ----------------------------------------------------------------------------
  function render() {
    frameScheduled = false;
    const parts = new Set(dirty);
    dirty.clear();
    if (parts.has("session")) renderSession();
    if (parts.has("workers")) renderWorkers();
    if (parts.has("inbox")) renderInbox();
    if (parts.has("decision")) renderDecision();
    if (parts.has("reviews") || parts.has("decision")) renderReviews();
    if (parts.has("plan")) renderPlan();
    if (parts.has("log-reset")) rebuildLog();
    else if (parts.has("log")) appendLog();
    $("event-count").textContent = state.eventsSeen.toLocaleString();
  }

  function renderSession() {
    const s = state.session;
    const status = (state.ended && state.ended.status) || (s && s.status) || "waiting";
    const badge = $("session-status");
    badge.className = "pill status-" + status;
    badge.dataset.status = status;
    badge.textContent = cap(status);
    $("session-id").textContent = s ? s.session_id : "—";
    if (s) {
      $("task").textContent = s.task;
      $("plan-summary").textContent = s.plan_summary || "";
      $("target").textContent = s.target;
      $("target").title = s.target;
      $("plan-source").textContent = s.plan_source ? cap(s.plan_source.replace("_", " ")) : "—";
      const done = (s.assignments || []).filter((a) => a.status === "completed").length;
      $("assignment-count").textContent = (s.assignments || []).length ? done + " / " + s.assignments.length + " done" : "—";
      document.title = cap(status) + " · " + s.session_id + " · Orchestrator";
    }
    const over = ["completed", "failed", "stopped"].includes(status);
    $("close-dashboard").hidden = !over;
    document.querySelectorAll("#session-controls [data-action]").forEach((b) => { b.disabled = over; });
    if (over && $("banner").dataset.kind !== "lost") endedBanner();
    tickElapsed();
  }

  function tickElapsed() {
    const s = state.session;
    if (!s || !s.created_at) return;
    const start = Date.parse(s.created_at);
    const over = ["completed", "failed", "stopped"].includes(s.status);
    const end = s.ended_at ? Date.parse(s.ended_at) : over ? Date.parse(s.updated_at) : Date.now() + state.clockOffset;
    let secs = Math.max(0, Math.floor((end - start) / 1000));
    const d = Math.floor(secs / 86400); secs -= d * 86400;
    const h = Math.floor(secs / 3600); secs -= h * 3600;
    const m = Math.floor(secs / 60); secs -= m * 60;
    $("elapsed").textContent = d ? d + "d " + h + "h " + m + "m"
      : (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(secs).padStart(2, "0");
  }

  function rolesOf(agent) {
    const roles = new Set();
    ((state.session && state.session.assignments) || []).forEach((a) => { if (a.agent === agent) roles.add(a.role); });
    return Array.from(roles).join(", ");
  }

  function lastEventOf(agent, pred) {
    for (let i = state.events.length - 1, n = 0; i >= 0 && n < 2000; i--, n++) {
      const e = state.events[i];
      if (e.agent === agent && (!pred || pred(e))) return e;
    }
    return null;
  }

  function describe(e) {
    const p = e.payload || {};
    if (p.text) return p.text;
    if (p.tool) return p.tool + (p.file ? " " + p.file : "");
    if (p.file) return p.file;
    if (p.kind) return p.kind;
    return e.type;
  }

  function renderWorkers() {
    const root = $("workers");
    AGENTS.forEach((agent) => {
      let card = root.querySelector('[data-agent="' + agent + '"]');
      if (!card) card = buildWorkerCard(root, agent);
      const w = state.workers[agent];
      const status = w ? w.status : "idle";
      const statusPill = card.querySelector(".w-status");
      statusPill.className = "pill w-status status-" + status;
      statusPill.dataset.status = status;
      statusPill.textContent = w ? cap(status) : "Not started";
      card.querySelector(".role").textContent = rolesOf(agent);

      const last = lastEventOf(agent);
      const activity = (w && w.last_activity) || (last && describe(last)) || "";
      const act = card.querySelector(".activity");
      act.textContent = activity || "No activity yet";
      act.classList.toggle("none", !activity);
      act.title = activity;

      let progress = w && typeof w.last_progress === "number" ? w.last_progress : null;
      if (progress === null) {
        const pe = lastEventOf(agent, (e) => e.payload && typeof e.payload.progress === "number");
        if (pe) progress = pe.payload.progress;
      }
      card.querySelector(".p-fill").style.width = (progress || 0) + "%";
      card.querySelector(".p-value").textContent = progress === null ? "—" : progress + "%";

      const share = ((state.session && state.session.shares) || []).find((s) => s.agent === agent);
      const band = card.querySelector(".band");
      const mark = card.querySelector(".mark");
      const note = card.querySelector(".share-note");
      if (share) {
        const actual = share.actual_by_tokens !== null && share.actual_by_tokens !== undefined && !share.actual_by_time
          ? share.actual_by_tokens : share.actual_by_time;
        band.style.left = share.target_min * 100 + "%";
        band.style.width = Math.max(0.5, (share.target_max - share.target_min) * 100) + "%";
        mark.style.width = Math.min(100, (actual || 0) * 100) + "%";
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

      renderSpark(card.querySelector(".spark-cpu"), (samples[agent] || []).map((s) => s.cpu), (v) => v.toFixed(0) + "%", 100);
      renderSpark(card.querySelector(".spark-mem"), (samples[agent] || []).map((s) => s.rss), fmtBytes, null);

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

  function buildWorkerCard(root, agent) {
    const card = el("article", "card worker");
    card.dataset.agent = agent;
    const head = el("div", "worker-head");
    head.append(el("h3", null, agent), el("span", "role"), pill("Not started", "idle", "w-status"));
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
  function renderSpark(box, values, fmt, fixedMax) {
    const vals = values.filter((v) => typeof v === "number");
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
    const n = Math.max(vals.length - 1, 1);
    const pts = vals.map((v, i) => (i / n * 100).toFixed(2) + "," + (29 - (v / max) * 27).toFixed(2));
    if (vals.length === 1) pts.push("100," + pts[0].split(",")[1]);
    svg.querySelector("polyline").setAttribute("points", pts.join(" "));
    svg.querySelector("polygon").setAttribute("points", "0,30 " + pts.join(" ") + " 100,30");
  }

  function fmtBytes(b) {
    if (b === null || b === undefined) return "—";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return b.toFixed(b < 10 && i ? 1 : 0) + " " + units[i];
  }

  // --- inbox --------------------------------------------------------------------------------
  const CLOSED = ["answered", "closed", "resolved", "expired", "cancelled"];
  function openQuestions() {
    return ((state.session && state.session.questions) || []).filter((q) =>
      q && q.id !== undefined && !CLOSED.includes(String(q.status || "").toLowerCase()) && q.answered !== true);
  }

  function renderInbox() {
    const root = $("inbox");
    const open = openQuestions();
    const ids = new Set(open.map((q) => String(q.id)));
    root.querySelectorAll(".question").forEach((node) => { if (!ids.has(node.dataset.id)) node.remove(); });
    open.forEach((q) => {
      if (root.querySelector('.question[data-id="' + CSS.escape(String(q.id)) + '"]')) return;
      root.append(buildQuestion(q));
    });
    const empty = root.querySelector(".empty");
    if (open.length && empty) empty.remove();
    if (!open.length && !empty) root.append(el("p", "empty", "Nothing waits on you."));
    const count = $("inbox-count");
    count.hidden = !open.length;
    count.textContent = open.length;
  }

  function buildQuestion(q) {
    const kind = ["escalation", "clarification", "confirmation"].includes(q.kind) ? q.kind : "clarification";
    const node = el("div", "question");
    node.dataset.id = String(q.id);
    node.dataset.kind = kind;
    const head = el("div", "q-head");
    head.append(el("span", "pill plain kind-" + kind, cap(kind)));
    if (q.agent) head.append(el("span", "agent-tag agent-" + q.agent, q.agent));
    if (q.created_at || q.asked_at) head.append(el("span", null, fmtTime(q.created_at || q.asked_at)));
    node.append(head, el("div", "q-text", q.text || q.question || "(no text)"));
    const details = q.details && typeof q.details === "object" ? Object.entries(q.details) : [];
    if (details.length) {
      const dl = el("dl", "q-details");
      details.slice(0, 8).forEach(([k, v]) => {
        dl.append(el("dt", null, k.replace(/_/g, " ")), el("dd", null, typeof v === "string" ? v : JSON.stringify(v)));
      });
      node.append(dl);
    }
    const area = el("textarea");
    area.placeholder = kind === "confirmation" ? "Optional note" : "Your answer";
    area.setAttribute("aria-label", "Answer to: " + (q.text || q.id));
    const actions = el("div", "q-actions");
    if (kind === "confirmation") {
      const deny = el("button", "btn danger", "Deny");
      const approve = el("button", "btn ok", "Approve");
      deny.type = approve.type = "button";
      deny.dataset.answer = "deny"; approve.dataset.answer = "approve";
      deny.onclick = () => answer(q, { answer: area.value || "denied", approve: false }, node);
      approve.onclick = () => answer(q, { answer: area.value || "approved", approve: true }, node);
      actions.append(deny, approve);
    } else {
      (q.options || []).forEach((option) => {
        const b = el("button", "btn small", option);
        b.type = "button";
        b.onclick = () => { area.value = option; area.focus(); };
        actions.append(b);
      });
      const sendBtn = el("button", "btn primary", "Send answer");
      sendBtn.type = "button";
      sendBtn.dataset.answer = "send";
      sendBtn.onclick = () => {
        if (!area.value.trim()) { area.focus(); toast("Write an answer first", true); return; }
        answer(q, { answer: area.value }, node);
      };
      actions.append(sendBtn);
    }
    node.append(area, actions);
    if (state.pendingAnswers[q.id]) node.classList.add("sent");
    return node;
  }

  // --- decision & reviews -------------------------------------------------------------------
  // A decision entry is a ReviewCompleted record ({review_id, answers, decision: {decision,
  // reasoning}}) or, for other producers, a flat {decision, reasoning}.
  function decisionOf(d) { return d && d.decision && typeof d.decision === "object" ? d.decision : d || {}; }
  function decisionName(d) { const x = decisionOf(d); return x.decision || x.action || x.outcome || x.kind || "decision"; }
  function decisionWhy(d) { const x = decisionOf(d); return x.reasoning || x.reason || x.rationale || x.summary || x.text || ""; }

  function renderDecision() {
    const root = $("decision");
    root.replaceChildren();
    const list = (state.session && state.session.decisions) || [];
    if (!list.length) { root.append(el("p", "empty", "No decision yet.")); return; }
    const d = list[list.length - 1];
    const box = el("div", "decision");
    const head = el("div", "d-head");
    const name = String(decisionName(d));
    head.append(pill(name.replace(/_/g, " "), name.toLowerCase()));
    if (d.agent) head.append(el("span", "agent-tag agent-" + d.agent, d.agent));
    if (d.review_id) head.append(el("span", "muted", "review " + d.review_id));
    const when = d.decided_at || d.created_at || d.timestamp || d.at || d.sent_at;
    if (when) head.append(el("span", "muted", fmtTime(when)));
    box.append(head, el("p", "reason", decisionWhy(d) || "No reasoning given."));
    if (list.length > 1) {
      const more = el("details", "history");
      more.append(el("summary", null, (list.length - 1) + " earlier decision" + (list.length > 2 ? "s" : "")));
      const ol = el("ul");
      list.slice(0, -1).reverse().slice(0, 20).forEach((x) => {
        ol.append(el("li", null, String(decisionName(x)).replace(/_/g, " ") + " — " + decisionWhy(x)));
      });
      more.append(ol);
      box.append(more);
    }
    root.append(box);
  }

  function verdictOf(part) {
    if (!part || typeof part !== "object") return null;
    const v = part.verdict || part.status || (part.response && part.response.verdict);
    return v ? String(v) : null;
  }

  function reviewRecords() {
    const byId = new Map();
    const started = (state.facts.review_started || []);
    started.forEach((r) => byId.set(r.review_id, { id: r.review_id, started: r }));
    const done = ((state.session && state.session.decisions) || []).concat(state.facts.review_completed || []);
    done.forEach((r) => {
      if (r && r.review_id && Array.isArray(r.answers)) byId.set(r.review_id, { id: r.review_id, done: r });
    });
    return Array.from(byId.values());
  }

  function renderRecord(root, rec) {
    const box = el("div", "review");
    const head = el("div", "r-head");
    head.append(el("b", null, rec.id));
    const r = rec.done || rec.started;
    const triggers = (r.triggers || []).map((t) => t.kind || t.reason || "").filter(Boolean);
    if (triggers.length) head.append(el("span", null, triggers.join(", ")));
    if (r.author) head.append(el("span", "agent-tag agent-" + r.author, "on " + r.author + "'s work"));
    if (rec.done) {
      const name = String(decisionName(rec.done));
      head.append(pill(name.replace(/_/g, " "), name.toLowerCase()));
    } else {
      head.append(pill("In progress", "reviewing"));
    }
    box.append(head);
    if (rec.done) {
      if (rec.done.skipped) box.append(el("p", "muted", "Skipped: " + rec.done.skipped));
      (rec.done.answers || []).forEach((a) => {
        const row = el("div", "verdict");
        row.append(el("span", "who agent-" + a.agent, a.agent), pill(cap(a.verdict), String(a.verdict).toLowerCase()));
        if (a.summary || a.reason) row.append(el("span", "muted", a.summary || a.reason));
        box.append(row);
        appendFindings(box, a.findings || []);
      });
    } else {
      box.append(el("p", "empty", "Waiting for " + (rec.started.reviewers || []).join(", ") + "…"));
    }
    root.append(box);
  }

  function appendFindings(box, findings) {
    if (!findings.length) return;
    const ul = el("ul", "findings");
    findings.slice(0, 8).forEach((f) => {
      const where = f.file ? "(" + f.file + (f.line ? ":" + f.line : "") + ")" : "";
      const text = typeof f === "string" ? f : [f.severity ? "[" + f.severity + "]" : "", f.text || f.message || f.description || JSON.stringify(f), where].join(" ").trim();
      ul.append(el("li", null, text));
    });
    box.append(ul);
  }

  function renderReviews() {
    const root = $("reviews");
    root.replaceChildren();
    const records = reviewRecords();
    if (records.length) { records.slice(-6).reverse().forEach((rec) => renderRecord(root, rec)); return; }
    const reviews = state.reviews.slice(-6).reverse();
    if (!reviews.length) { root.append(el("p", "empty", "No review yet.")); return; }
    reviews.forEach((r) => {
      const box = el("div", "review");
      const head = el("div", "r-head");
      const req = r.files.request || {};
      head.append(el("b", null, r.id));
      if (req.trigger) head.append(el("span", null, typeof req.trigger === "string" ? req.trigger : (req.trigger.kind || "")));
      head.append(el("span", null, fmtTime(r.updated_at)));
      const decision = r.files.decision;
      if (decision && decisionName(decision)) {
        const name = String(decisionName(decision));
        head.append(pill(name.replace(/_/g, " "), name.toLowerCase()));
      }
      box.append(head);
      let shown = 0;
      Object.keys(r.files).forEach((name) => {
        if (name === "request" || name === "decision") return;
        const part = r.files[name];
        const verdict = verdictOf(part);
        if (!verdict && !(part && part.unreadable)) return;
        shown++;
        const row = el("div", "verdict");
        row.append(el("span", "who agent-" + (part.reviewer || name), part.reviewer || name));
        row.append(part.unreadable ? el("span", "muted", "answer still being written") : pill(cap(verdict), verdict.toLowerCase()));
        if (part.summary) row.append(el("span", "muted", part.summary));
        box.append(row);
        appendFindings(box, part.findings || []);
      });
      if (!shown) box.append(el("p", "empty", "Waiting for reviewers…"));
      root.append(box);
    });
  }

  function renderPlan() {
    const root = $("plan");
    root.replaceChildren();
    const list = (state.session && state.session.assignments) || [];
    if (!list.length) { root.append(el("li", "empty", "No plan yet.")); return; }
    list.forEach((a) => {
      const li = el("li");
      li.title = a.title + (a.depends_on && a.depends_on.length ? " (after " + a.depends_on.join(", ") + ")" : "");
      li.append(el("span", "agent-tag agent-" + a.agent, a.agent), el("span", "t", a.title), pill(cap(a.status), a.status));
      root.append(li);
    });
  }

  // --- event log (windowed: only the visible rows exist in the DOM) --------------------------
  const log = { filtered: [], scanned: 0, paused: false, unseen: 0, selected: null, base: 0 };
  function filters() {
    return { agent: $("filter-agent").value, type: $("filter-type").value, text: $("filter-text").value.trim().toLowerCase() };
  }
  function matches(e, f) {
    if (f.agent && e.agent !== f.agent) return false;
    if (f.type && e.type !== f.type) return false;
    if (f.text) {
      const p = e.payload || {};
      const hay = [p.text, p.tool, p.file, p.kind, e.type, e.agent].join(" ").toLowerCase();
      if (hay.indexOf(f.text) < 0) return false;
    }
    return true;
  }
  function rebuildLog() {
    const f = filters();
    log.filtered = state.events.filter((e) => matches(e, f));
    log.scanned = state.events.length;
    log.first = state.events[0];
    log.unseen = 0;
    drawLog(true);
  }
  function appendLog() {
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
  function drawLog(stick) {
    const box = $("log");
    const spacer = $("log-spacer");
    spacer.style.height = log.filtered.length * ROW_H + "px";
    if (stick) box.scrollTop = box.scrollHeight;
    drawRows();
    const total = state.events.length;
    $("log-count").textContent = log.filtered.length.toLocaleString() + (log.filtered.length !== total ? " of " + total.toLocaleString() : "") +
      " events" + (log.paused && log.unseen ? " · " + log.unseen + " new below" : "");
  }
  function drawRows() {
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
    const p = e.payload || {};
    let text = describe(e);
    if (typeof p.progress === "number") text = p.progress + "% · " + text;
    if (p.kind && p.kind !== "text" && p.text) text = "[" + p.kind + "] " + text;
    return String(text).replace(/\s+/g, " ").slice(0, 400);
  }
  function showDetail(e) {
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

  // --- helpers ------------------------------------------------------------------------------
  function fmtClock(ts) {
    const d = new Date(ts);
    if (isNaN(d)) return "";
    return d.toLocaleTimeString([], { hour12: false });
  }
  function fmtTime(ts) {
    const d = new Date(ts);
    if (!ts || isNaN(d)) return "";
    return d.toLocaleString([], { hour12: false, month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function toast(text, isError) {
    const node = el("div", "toast" + (isError ? " error" : ""), text);
    $("toasts").append(node);
    setTimeout(() => node.remove(), isError ? 6000 : 3000);
  }

  // --- wiring -------------------------------------------------------------------------------
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
  $("detail-close").onclick = () => { $("log-detail").hidden = true; log.selected = null; drawRows(); };
  $("close-dashboard").onclick = async () => {
    try { await api("POST", "/api/close"); showBanner("ended", "The dashboard is closing. You can close this tab."); }
    catch (e) { toast("Could not close: " + e.message, true); }
  };
  ["filter-agent", "filter-type"].forEach((id) => $(id).addEventListener("change", () => markDirty("log-reset")));
  let searchTimer = null;
  $("filter-text").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(() => markDirty("log-reset"), 150); });
  $("pause-scroll").onclick = () => {
    log.paused = !log.paused;
    $("pause-scroll").setAttribute("aria-pressed", String(log.paused));
    $("pause-scroll").textContent = log.paused ? "Resume scrolling" : "Pause scrolling";
    if (!log.paused) { log.unseen = 0; drawLog(true); } else drawLog(false);
  };
  $("log").addEventListener("scroll", () => {
    const box = $("log");
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - ROW_H;
    // Scrolling up by hand pauses following; back at the bottom resumes it.
    if (!atBottom && !log.paused) $("pause-scroll").click();
    else if (atBottom && log.paused && log.unseen === 0 && box.dataset.auto !== "1") { /* keep the user's choice */ }
    requestAnimationFrame(drawRows);
  }, { passive: true });
  setInterval(tickElapsed, 1000);
  setInterval(() => send({ type: "ping" }), 25000);

  window.orchestrator = { state, log };   // for debugging from the console and for tests
  renderWorkers();
  connect();
})();
