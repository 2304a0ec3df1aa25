// Questions only a person can answer (messages/session.py Question), with their answers.
import { $, cap, el, fmtTime, toast } from "./dom.js";
import { api } from "./api.js";
import { openQuestions, state } from "./store.js";

async function answer(question, body, node) {
  node.querySelectorAll("button, textarea").forEach((b) => { b.disabled = true; });
  try {
    await api("POST", "/api/answer", Object.assign({ question_id: question.id }, body));
    state.pendingAnswers[question.id] = true;
    node.classList.add("sent");
    toast("Answer sent");
  } catch (e) {
    node.querySelectorAll("button, textarea").forEach((b) => { b.disabled = false; });
    toast("Answer not sent: " + e.message, true);
  }
}

export function renderInbox() {
  const root = $("inbox");
  const open = openQuestions();
  const ids = new Set(open.map((q) => q.id));
  root.querySelectorAll(".question").forEach((node) => { if (!ids.has(node.dataset.id)) node.remove(); });
  open.forEach((q) => {
    if (!root.querySelector('.question[data-id="' + CSS.escape(q.id) + '"]')) root.append(buildQuestion(q));
  });
  const empty = root.querySelector(".empty");
  if (open.length && empty) empty.remove();
  if (!open.length && !empty) root.append(el("p", "empty", "Nothing waits on you."));
  const count = $("inbox-count");
  count.hidden = !open.length;
  count.textContent = open.length;
}

function buildQuestion(q) {
  const node = el("div", "question");
  node.dataset.id = q.id;
  node.dataset.kind = q.kind;
  node.dataset.status = q.status;
  const head = el("div", "q-head");
  head.append(el("span", "pill plain kind-" + q.kind, cap(q.kind)));
  if (q.agent) head.append(el("span", "agent-tag agent-" + q.agent, q.agent));
  if (q.asked_at) head.append(el("span", null, fmtTime(q.asked_at)));
  node.append(head, el("div", "q-text", q.text));
  // What the question is about (its typed subject), less the tag that says which kind it is.
  const details = Object.entries(q.subject || {}).filter(([k, v]) => k !== "type" && v !== null);
  if (details.length) {
    const dl = el("dl", "q-details");
    details.slice(0, 8).forEach(([k, v]) => {
      dl.append(el("dt", null, k.replace(/_/g, " ")), el("dd", null, typeof v === "string" ? v : JSON.stringify(v)));
    });
    node.append(dl);
  }
  if (q.timeout_s !== null && q.default_answer !== null) {
    node.append(el("p", "muted", "Unanswered after " + Math.round(q.timeout_s) + "s: “" + q.default_answer + "”."));
  }
  const area = el("textarea");
  area.placeholder = q.kind === "confirmation" ? "Optional note" : "Your answer";
  area.setAttribute("aria-label", "Answer to: " + q.text);
  const actions = el("div", "q-actions");
  if (q.kind === "confirmation") {
    const deny = el("button", "btn danger", "Deny");
    const approve = el("button", "btn ok", "Approve");
    deny.type = approve.type = "button";
    deny.dataset.answer = "deny"; approve.dataset.answer = "approve";
    deny.onclick = () => answer(q, { answer: area.value || "denied", approve: false }, node);
    approve.onclick = () => answer(q, { answer: area.value || "approved", approve: true }, node);
    actions.append(deny, approve);
  } else {
    q.options.forEach((option) => {
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
