// The latest decision, the peer reviews and the plan.
//
// A decision record (state.json "decisions") is, for now, a JSON object of one of two forms:
// a review's record (ReviewCompleted.record(): review_id, author, answers, decision:
// {decision, reasoning}, decided_at, applied) or another actor's entry (source, kind, at,
// reason or error).
import { $, cap, el, fmtTime, pill } from "./dom.js";
import { state } from "./store.js";

export function describeDecision(d) {
  if (d.review_id) {
    return { name: d.decision.decision, why: d.decision.reasoning, when: d.decided_at, agent: d.author, review: d.review_id };
  }
  return { name: d.kind, why: d.reason || d.error || "", when: d.at, agent: d.agent || null, review: null };
}

export function renderDecision() {
  const root = $("decision");
  root.replaceChildren();
  const list = (state.session && state.session.decisions) || [];
  if (!list.length) { root.append(el("p", "empty", "No decision yet.")); return; }
  const d = describeDecision(list[list.length - 1]);
  const box = el("div", "decision");
  const head = el("div", "d-head");
  head.append(pill(String(d.name).replace(/_/g, " "), String(d.name).toLowerCase()));
  if (d.agent) head.append(el("span", "agent-tag agent-" + d.agent, d.agent));
  if (d.review) head.append(el("span", "muted", "review " + d.review));
  if (d.when) head.append(el("span", "muted", fmtTime(d.when)));
  box.append(head, el("p", "reason", d.why || "No reasoning given."));
  if (list.length > 1) {
    const more = el("details", "history");
    more.append(el("summary", null, (list.length - 1) + " earlier decision" + (list.length > 2 ? "s" : "")));
    const ul = el("ul");
    list.slice(0, -1).reverse().slice(0, 20).forEach((x) => {
      const e = describeDecision(x);
      ul.append(el("li", null, String(e.name).replace(/_/g, " ") + " — " + e.why));
    });
    more.append(ul);
    box.append(more);
  }
  root.append(box);
}

function reviewRecords() {
  // In progress: review_started frames; done: the review records among the decisions and
  // the review_completed frames (the same record).
  const byId = new Map();
  (state.facts.review_started || []).forEach((r) => byId.set(r.review_id, { id: r.review_id, started: r }));
  const done = ((state.session && state.session.decisions) || []).filter((d) => d.review_id)
    .concat((state.facts.review_completed || []).map((f) => f.record));
  done.forEach((r) => byId.set(r.review_id, { id: r.review_id, done: r }));
  return Array.from(byId.values());
}

export function renderReviews() {
  const root = $("reviews");
  root.replaceChildren();
  const records = reviewRecords();
  if (!records.length) { root.append(el("p", "empty", "No review yet.")); return; }
  records.slice(-6).reverse().forEach((rec) => renderRecord(root, rec));
}

function renderRecord(root, rec) {
  const box = el("div", "review");
  const head = el("div", "r-head");
  head.append(el("b", null, rec.id));
  const r = rec.done || rec.started;
  const triggers = r.triggers.map((t) => t.kind);
  if (triggers.length) head.append(el("span", null, triggers.join(", ")));
  if (rec.done && rec.done.author) head.append(el("span", "agent-tag agent-" + rec.done.author, "on " + rec.done.author + "'s work"));
  if (rec.done) {
    const name = rec.done.decision.decision;
    head.append(pill(name.replace(/_/g, " "), name.toLowerCase()));
  } else {
    head.append(pill("In progress", "reviewing"));
  }
  box.append(head);
  if (rec.done) {
    if (rec.done.skipped) box.append(el("p", "muted", "Skipped: " + rec.done.skipped));
    rec.done.answers.forEach((a) => {
      const row = el("div", "verdict");
      row.append(el("span", "who agent-" + a.agent, a.agent), pill(cap(a.verdict), a.verdict));
      if (a.summary || a.reason) row.append(el("span", "muted", a.summary || a.reason));
      box.append(row);
      appendFindings(box, a.findings);
    });
  } else {
    box.append(el("p", "empty", "Waiting for " + rec.started.reviewers.join(", ") + "…"));
  }
  root.append(box);
}

function appendFindings(box, findings) {
  if (!findings.length) return;
  const ul = el("ul", "findings");
  findings.slice(0, 8).forEach((f) => {
    const where = f.file ? "(" + f.file + (f.line ? ":" + f.line : "") + ")" : "";
    ul.append(el("li", null, ["[" + f.severity + "]", f.text, where].join(" ").trim()));
  });
  box.append(ul);
}

export function renderPlan() {
  const root = $("plan");
  root.replaceChildren();
  const list = (state.session && state.session.assignments) || [];
  if (!list.length) { root.append(el("li", "empty", "No plan yet.")); return; }
  list.forEach((a) => {
    const li = el("li");
    li.title = a.title + (a.depends_on.length ? " (after " + a.depends_on.join(", ") + ")" : "");
    li.append(el("span", "agent-tag agent-" + a.agent, a.agent), el("span", "t", a.title), pill(cap(a.status), a.status));
    root.append(li);
  });
}
