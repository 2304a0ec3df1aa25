// What the page knows, and how each frame of the wire contract (messages/frames.py) changes it.
//
// Every frame is {type, seq, data}; the fields read here are exactly the contract's.

export const AGENTS = ["gemini", "codex", "claude"];
export const TERMINAL = ["completed", "failed", "stopped"];
const MAX_EVENTS = 20000;   // kept in memory; the log only renders what is visible
const MAX_SAMPLES = 120;    // per run, for the sparklines: at most one a second in their window
export const SPARK_WINDOW_MS = 90000;  // the sparklines show a run's last 90 s
const MAX_FACTS = 600;      // per frame type

export const state = {
  seq: null, epoch: null, session: null, ended: null, changes: null, workers: {}, facts: {},
  events: [], eventsSeen: 0, clockOffset: 0, pendingAnswers: {},
};
export const samples = {};  // run -> [{at, cpu, rss}], at: the sample's time (ms)
AGENTS.forEach((a) => { samples[a] = []; });

// A run's name: the agent's for its first run, "claude#2" for its second parallel one
// ([agents.<name>] max_parallel); a worker, an event and a sample each say agent and slot.
export function runName(agent, slot) { return slot && slot > 1 ? agent + "#" + slot : agent; }

// --- render scheduling: parts of the page marked dirty are drawn on the next frame ---------
const dirty = new Set();
let scheduled = false;
let renderer = () => {};
export function onRender(fn) { renderer = fn; }
export function markDirty(...parts) {
  parts.forEach((p) => dirty.add(p));
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      const parts = new Set(dirty);
      dirty.clear();
      renderer(parts);
    });
  }
}

// --- frames ------------------------------------------------------------------------------
// Returns what the socket layer needs to know: "gap" when a delta was missed.
export function applyFrame(frame) {
  const data = frame.data;
  let gap = false;
  if (frame.seq !== null && frame.type !== "snapshot") {
    if (state.seq !== null && frame.seq !== state.seq + 1) gap = true;
    state.seq = frame.seq;
  }
  switch (frame.type) {
    case "snapshot": applySnapshot(frame.seq, data); break;
    case "hello": state.epoch = data.epoch; break;
    case "event":
      state.events.push(data);
      state.eventsSeen += 1;
      if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
      markDirty("log", "workers", "counts");
      break;
    case "worker":
      state.workers[runName(data.agent, data.slot)] = data;
      markDirty("workers");
      break;
    case "session":
      state.session = data;
      markDirty("session", "workers", "inbox", "decision", "reviews", "plan");
      break;
    case "session_delta":  // what changed since the last session frame (messages/session_delta.py)
      if (state.session) state.session = applySessionDelta(state.session, data);
      markDirty("session", "workers", "inbox", "decision", "reviews", "plan");
      break;
    case "session_ended":
      state.ended = data;
      markDirty("session");
      break;
    case "changes":  // the latest replaces the one before: the branch after this merge
      state.changes = data;
      markDirty("changes");
      break;
    case "resources": case "limit": case "review_started": case "review_completed":
    case "recovery": case "restart": case "tool_call": case "security_finding":
      keepFact(frame.type, data);
      break;
    case "ack": case "error": case "pong": break;  // handled by the socket layer
    default: break;  // a frame this page does not know: ignore it
  }
  return gap;
}

function applySnapshot(seq, data) {
  state.seq = seq;
  let events = data.events;
  if (state.epoch === data.epoch && state.events.length) {
    // Same gateway, we fell behind: keep what we had and add the snapshot's recent events.
    const key = (e) => runName(e.agent, e.slot) + ":" + e.seq;  // each run's file numbers its own
    const fresh = new Set(events.map(key));
    events = state.events.filter((e) => !fresh.has(key(e))).concat(events);
    if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
  }
  state.epoch = data.epoch;
  state.session = data.session;
  state.ended = data.ended;
  state.changes = data.changes;
  state.workers = {};
  data.workers.forEach((w) => { state.workers[runName(w.agent, w.slot)] = w; });
  state.events = events;
  state.eventsSeen = data.events_seen;
  state.clockOffset = Date.parse(data.server_time) - Date.now();
  state.facts = {};
  Object.keys(samples).forEach((a) => { samples[a] = []; });
  data.recent.forEach((f) => keepFact(f.type, f.data));
  markDirty("session", "workers", "log-reset", "inbox", "decision", "reviews", "plan", "changes");
}

// As apply_session_delta in messages/session_delta.py: fields replaced, lists extended,
// assignments replaced by id (or added at the end).
export function applySessionDelta(session, delta) {
  const result = Object.assign({}, session, delta.fields || {});
  Object.entries(delta.appended || {}).forEach(([name, items]) => {
    result[name] = (result[name] || []).concat(items);
  });
  const changed = delta.assignments || [];
  if (changed.length) {
    const merged = (result.assignments || []).slice();
    changed.forEach((a) => {
      const i = merged.findIndex((b) => b.id === a.id);
      if (i < 0) merged.push(a); else merged[i] = a;
    });
    result.assignments = merged;
  }
  return result;
}

function keepFact(kind, data) {
  const list = state.facts[kind] || (state.facts[kind] = []);
  list.push(data);
  if (list.length > MAX_FACTS) list.splice(0, list.length - MAX_FACTS);
  if (kind === "resources") {
    // The monitor tells a sample when a run's figures moved or every heartbeat (10 s), not every
    // second: the charts place each one at its time, and drop those before their window but
    // the last of them, which still holds at the window's left edge.
    const at = Date.parse(data.taken_at);
    data.agents.forEach((tree) => {
      if (tree.review_id || !samples[tree.agent]) return; // a peer's review run: not the agent's own chart
      const run = runName(tree.agent, tree.slot);
      const list = samples[run] || (samples[run] = []);
      list.push({ at, cpu: tree.cpu_percent, rss: tree.rss_bytes });
      while (list.length > MAX_SAMPLES || (list.length > 1 && list[1].at <= at - SPARK_WINDOW_MS)) list.shift();
    });
    markDirty("workers");
  }
  if (kind === "review_started" || kind === "review_completed") markDirty("reviews");
}

// --- derived ----------------------------------------------------------------------------
export function sessionStatus() {
  return (state.ended && state.ended.status) || (state.session && state.session.status) || "starting";
}

export function openQuestions() {
  // "answered" and "expired" are closed; any other status still waits on a person.
  return ((state.session && state.session.questions) || []).filter((q) => q.status !== "answered" && q.status !== "expired");
}
