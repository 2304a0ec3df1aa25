// The one WebSocket that feeds the page.
//
// A "snapshot" frame comes first, then deltas numbered by "seq". After a drop the page
// reconnects with ?since=<last seq>&epoch=<epoch> and the gateway replays what was missed
// (a "hello" frame, then the frames) or sends a fresh snapshot. The token goes as the
// subprotocol "token.<token>" beside "orchestrate": a browser cannot set headers here.
import { $, showBanner, toast } from "./dom.js";
import { api, token } from "./api.js";
import { applyFrame, state } from "./store.js";
import { noticeFrame } from "./notify.js";

let ws = null;
let attempts = 0;
let everConnected = false;
let wasLost = false;
let afterBanner = () => {};

export function onBannerHidden(fn) { afterBanner = fn; }

function setConn(kind, text) {
  $("conn").dataset.state = kind;
  $("conn-text").textContent = text;
}

export function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

export function connect() {
  const q = new URLSearchParams();
  if (state.seq !== null) { q.set("since", state.seq); q.set("epoch", state.epoch || ""); }
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" + (q.toString() ? "?" + q : "");
  setConn("connecting", attempts ? "Reconnecting" : "Connecting");
  try {
    ws = new WebSocket(url, token ? ["orchestrate", "token." + token] : ["orchestrate"]);
  } catch (e) { scheduleReconnect(); return; }
  let missed = 0;
  ws.onopen = () => { attempts = 0; setConn("live", "Live"); };
  ws.onmessage = (msg) => {
    let frame;
    try { frame = JSON.parse(msg.data); } catch (e) { return; }
    // Under load the gateway sends the frames that queued up as one "batch" frame.
    const frames = frame.type === "batch" ? frame.data : [frame];
    for (const one of frames) {
      if (one.type === "hello") missed = one.data.missed;
      receive(one);
      if ((one.type === "hello" || one.type === "snapshot") && wasLost) {
        wasLost = false;
        showBanner("back", one.type === "hello"
          ? "Connection is back. Caught up on " + missed + " missed update" + (missed === 1 ? "" : "s") + "."
          : "Connection is back. The page was refreshed from a full snapshot.", 4000, afterBanner);
      }
      everConnected = true;
    }
  };
  ws.onclose = () => {
    ws = null;
    if (everConnected || attempts > 0) wasLost = true;
    setConn("lost", "Disconnected");
    scheduleReconnect();
  };
  ws.onerror = () => { /* onclose follows */ };
}

function receive(frame) {
  if (frame.type === "error") toast(frame.data.error, true);
  // A gap: something was lost between us and the gateway; ask for the whole state.
  const gap = applyFrame(frame);
  noticeFrame(frame);
  if (gap) send({ type: "resync" });
}

function scheduleReconnect() {
  attempts += 1;
  const delay = Math.min(5000, 400 * Math.pow(1.8, attempts - 1));
  showBanner("lost", "Connection to the orchestrator lost — reconnecting in " + Math.ceil(delay / 1000) +
    "s (attempt " + attempts + "). The page shows the last known state.");
  if (attempts === 2) api("GET", "/api/session").catch(() => {}); // explains a bad token
  setTimeout(connect, delay);
}
