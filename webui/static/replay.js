// A recorded session on the page served by `orchestrate serve`: the same frames the live
// dashboard was sent, rebuilt from the session's files, played back on the session's clock.
//
// /api/sessions/<id>/snapshot?at=... gives the snapshot a browser would have had at that
// moment, /frames?cursor=... the deltas after it, each with its time. A running session is
// opened at its end and followed as its files grow; a finished one can be played from any
// moment at 1x to 50x, paused, and jumped to a decision or an error.
import { $, el, fmtTime, toast } from "./dom.js";
import { api } from "./api.js";
import { applyFrame, markDirty, state } from "./store.js";

export const replaySession = new URLSearchParams(location.search).get("session");

const PAGE = 500;
const TICK_MS = 50;
const FOLLOW_MS = 1000;
const r = {
  cursor: "", seq: 0, queue: [], more: false, live: false, playing: false, speed: 10,
  start: 0, end: 0, clock: 0, lastTick: 0, loading: false, generation: 0, following: false,
};
window.orchestratorReplay = r;  // for tests and the console

const base = () => "/api/sessions/" + encodeURIComponent(replaySession);

function setConn(kind, text) {
  $("conn").dataset.state = kind;
  $("conn-text").textContent = text;
}

function showClock() {
  state.clockOffset = r.clock - Date.now();  // relative times on the page read the replay's clock
  const span = Math.max(1, r.end - r.start);
  if (document.activeElement !== $("replay-position")) {
    $("replay-position").value = String(Math.round(((r.clock - r.start) / span) * 1000));
  }
  $("replay-time").textContent = fmtTime(new Date(r.clock).toISOString());
  $("replay-play").textContent = r.playing ? "Pause" : "Play";
  $("replay-play").setAttribute("aria-pressed", String(r.playing));
  $("replay-bar").dataset.state = r.following ? "following" : r.playing ? "playing" : "paused";
  markDirty("session");
}

async function load(at) {
  const generation = ++r.generation;
  const data = await api("GET", base() + "/snapshot?at=" + encodeURIComponent(at));
  if (generation !== r.generation) return;  // a later seek won
  Object.assign(r, { cursor: data.cursor, seq: data.seq, queue: [], more: true, live: data.live,
    start: Date.parse(data.start), end: Date.parse(data.end), clock: Date.parse(data.at) });
  applyFrame(data.frame);
  r.following = r.live && r.clock >= r.end;
  setConn(r.following ? "live" : "replay", r.following ? "Following" : "Replay");
  showClock();
  await fill();
}

async function fill() {
  if (r.loading || !r.more || r.queue.length > PAGE) return;
  r.loading = true;
  const generation = r.generation;
  try {
    const q = "?cursor=" + encodeURIComponent(r.cursor) + "&seq=" + r.seq + "&limit=" + PAGE;
    const data = await api("GET", base() + "/frames" + q);
    if (generation !== r.generation) return;
    r.cursor = data.cursor;
    r.seq = data.seq;
    r.more = data.more;
    r.live = data.live;
    data.frames.forEach((f) => r.queue.push({ at: Date.parse(f.at), frame: f.frame }));
    if (data.frames.length) r.end = Math.max(r.end, r.queue[r.queue.length - 1].at);
  } catch (e) {
    toast("Replay: " + e.message, true);
  } finally {
    r.loading = false;
  }
}

function applyUntil(moment) {
  let applied = 0;
  while (r.queue.length && r.queue[0].at <= moment) {
    applyFrame(r.queue.shift().frame);
    applied += 1;
  }
  return applied;
}

function tick() {
  const now = performance.now();
  const elapsed = now - (r.lastTick || now);
  r.lastTick = now;
  if (r.following) {
    applyUntil(Infinity);
    r.clock = Date.now();
  } else if (r.playing) {
    r.clock = Math.min(r.clock + elapsed * r.speed, r.queue.length || r.more ? Infinity : r.end);
    applyUntil(r.clock);
    if (!r.queue.length && !r.more) {
      r.clock = r.end;
      r.playing = false;
      if (r.live) { r.following = true; setConn("live", "Following"); }
    }
  }
  if (r.playing || r.following) showClock();
  if (r.queue.length < PAGE) fill();
}

async function followLoop() {
  if (r.following) { r.more = true; await fill(); }
  setTimeout(followLoop, FOLLOW_MS);
}

// A moment is a time in ms or, for a mark, the recorded ISO time itself (finer than ms).
function seekTo(moment) {
  r.following = false;
  const at = typeof moment === "string" ? moment : new Date(moment).toISOString();
  load(at).catch((e) => toast("Replay: " + e.message, true));
}

async function loadMarks() {
  try {
    const data = await api("GET", base() + "/marks");
    const select = $("replay-marks");
    data.marks.forEach((m) => {
      const option = el("option", null, fmtTime(m.at) + " · " + m.kind + (m.agent ? " (" + m.agent + ")" : "") + ": " + m.label);
      option.value = m.at;
      option.dataset.kind = m.kind;
      select.append(option);
    });
    $("replay-mark-count").textContent = data.marks.length ? String(data.marks.length) : "";
  } catch (e) { /* no marks: nothing to jump to */ }
}

export async function startReplay() {
  document.body.classList.add("readonly");
  $("replay-bar").hidden = false;
  setConn("replay", "Loading");
  $("replay-play").onclick = () => {
    if (r.following) return;
    if (!r.playing && !r.queue.length && !r.more) { seekTo(r.start); r.playing = true; return; }  // again from the start
    r.playing = !r.playing;
    r.lastTick = performance.now();
    showClock();
  };
  $("replay-speed").onchange = (ev) => { r.speed = Number(ev.target.value) || 1; };
  $("replay-start").onclick = () => seekTo(r.start);
  $("replay-end").onclick = () => seekTo(r.end);
  $("replay-position").onchange = (ev) => seekTo(r.start + (Number(ev.target.value) / 1000) * (r.end - r.start));
  $("replay-marks").onchange = (ev) => { if (ev.target.value) seekTo(ev.target.value); };
  r.speed = Number($("replay-speed").value) || 10;
  await load("end");
  loadMarks();
  setInterval(tick, TICK_MS);
  followLoop();
}
