// Browser notifications for the events [notify] sends elsewhere: a question opened, the
// session ended, a limit paused or stopped work. Off until the user clicks the button, which
// asks for the permission (browsers allow the request only from a click).
import { $, cap, toast } from "./dom.js";
import { replaySession } from "./replay.js";
import { state } from "./store.js";

const ACTED = ["pause", "stop", "pause_session"];  // as actors/notify/notices.py: a warning is not news
const told = new Set();  // question ids already seen: on screen or told
let enabled = false;

function supported() { return typeof window.Notification === "function"; }

function show(title, body, tag) {
  if (!enabled || window.Notification.permission !== "granted") return;
  try { new window.Notification(title, { body: body, tag: tag }); }
  catch (e) { /* a page that may not create them (some mobile browsers): the tab title still says it */ }
}

function renderButton() {
  const button = $("notify-toggle");
  button.hidden = !supported() || Boolean(replaySession);  // a replay tells nothing new
  button.setAttribute("aria-pressed", String(enabled));
  button.textContent = enabled ? "Notifications on" : "Notify me";
}

async function toggle() {
  if (enabled) { enabled = false; renderButton(); return; }
  const answer = await window.Notification.requestPermission();
  if (answer !== "granted") { toast("The browser did not allow notifications (" + answer + ")", true); return; }
  enabled = true;
  renderButton();
  toast("Notifications on: a new question, the session's end, a limit acted");
}

function questions(session, tell) {
  ((session && session.questions) || []).forEach((q) => {
    if (q.status !== "open" || told.has(q.id)) return;
    told.add(q.id);
    if (tell) show("A " + q.kind + " waits on you", q.asked_by + ": " + q.text, "question-" + q.id);
  });
}

// Every frame the page applies comes here too, after the store has applied it; a snapshot only
// marks what is already shown.
export function noticeFrame(frame) {
  const data = frame.data;
  switch (frame.type) {
    case "snapshot": questions(data.session, false); break;
    case "session": questions(data, true); break;
    case "session_delta": questions(state.session, true); break;  // applied to the store just before
    case "session_ended":
      show("Session " + data.status, data.session_id + " (exit " + data.exit_code + "): " + data.summary, "ended");
      break;
    case "limit":
      if (ACTED.includes(data.action)) {
        show(cap(data.limit.replace(/_/g, " ")) + " limit: " + data.action.replace(/_/g, " "), data.reason, "limit");
      }
      break;
    default: break;
  }
}

export function setupNotify() {
  renderButton();
  $("notify-toggle").onclick = () => { toggle().catch((e) => toast("Notifications: " + e.message, true)); };
}
