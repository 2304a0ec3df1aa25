// The Changes panel: the session branch against its base, per file and per assignment, with
// each file's diff on demand (messages/frames.py ChangesData, a "changes" frame after every
// merge). Paths and diff lines are the agents' output: they go in through textContent only,
// so a line such as `<img src=x onerror=...>` shows as the text it is.
import { $, el } from "./dom.js";
import { state } from "./store.js";

const STATUS = { added: "added", modified: "modified", deleted: "deleted", type_changed: "type changed", unmerged: "unmerged", unknown: "changed" };
const panel = { mode: "files", selected: null };  // selected: the path whose diff is shown

function counts(item) {
  const box = el("span", "counts");
  if (item.binary || item.added === null) { box.append(el("span", "bin", "binary")); return box; }
  box.append(el("span", "add", "+" + item.added), el("span", "del", "-" + item.removed));
  return box;
}

const short = (sha) => String(sha || "").slice(0, 10);
// A path as a shell word, for the command shown to copy.
const shellWord = (s) => (/^[\w./@:+-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'");

function fileButton(file) {
  const b = el("button", "change-file");
  b.type = "button";
  b.dataset.path = file.path;
  b.setAttribute("aria-controls", "changes-diff");
  b.setAttribute("aria-pressed", String(panel.selected === file.path));
  b.append(el("span", "st st-" + file.status, STATUS[file.status] || file.status), el("span", "path", file.path), counts(file));
  b.title = "Show the diff of " + file.path;
  return b;
}

function fileList(files) {
  const ul = el("ul", "change-files");
  files.forEach((f) => { const li = el("li"); li.append(fileButton(f)); ul.append(li); });
  return ul;
}

function assignmentGroups(changes) {
  const box = el("div", "change-groups");
  const known = {};
  ((state.session && state.session.assignments) || []).forEach((a) => { known[a.id] = a; });
  changes.assignments.slice().reverse().forEach((step) => {  // the latest merge first
    const group = el("section", "change-group");
    const head = el("div", "g-head");
    const a = step.assignment_id !== null ? known[step.assignment_id] : null;
    if (a) head.append(el("span", "agent-tag agent-" + a.agent, a.agent));
    head.append(el("b", null, step.assignment_id === null ? "Commits the session did not make" : step.assignment_id));
    if (a) head.append(el("span", "t muted", a.title));
    head.append(el("span", "muted", step.files.length + " file" + (step.files.length === 1 ? "" : "s")), counts(step));
    head.title = short(step.before) + " → " + short(step.after);
    group.append(head);
    if (step.files.length) group.append(fileList(step.files));
    else group.append(el("p", "empty", "No file changed."));
    box.append(group);
  });
  return box;
}

function diffLine(line) {
  let cls = "ctx";
  if (line.startsWith("+++ ") || line.startsWith("--- ")) cls = "meta";
  else if (line.startsWith("@@")) cls = "hunk";
  else if (line.startsWith("+")) cls = "add";
  else if (line.startsWith("-")) cls = "del";
  else if (/^(diff --git |index |new file|deleted file|old mode|new mode|similarity|rename |Binary files)/.test(line)) cls = "meta";
  return el("span", "dl " + cls, line);
}

function renderDiff(box, changes) {
  box.replaceChildren();
  const file = changes.files.find((f) => f.path === panel.selected);
  if (!file) { box.append(el("p", "empty", "Choose a file to see its diff against the base.")); return; }
  const head = el("div", "diff-head");
  head.append(el("b", "path", file.path), el("span", "st st-" + file.status, STATUS[file.status] || file.status), counts(file),
    el("span", "muted", "the branch against its base"));
  box.append(head);
  // "(all files)": git's listing could not be split per file (a path with a newline), one text for all.
  const diff = changes.diffs.find((d) => d.path === file.path) || changes.diffs.find((d) => d.path === "(all files)");
  // The branch is in the session's store until `orchestrate apply`: plain git reads it there.
  const gitDir = changes.store ? "git --git-dir " + shellWord(changes.store) + " " : "git ";
  const whole = gitDir + "diff " + short(changes.base) + " " + changes.branch + " -- " + shellWord(file.path);
  if (file.binary) { box.append(el("p", "empty", "A binary file: no text to show.")); return; }
  if (!diff || !diff.text) {
    box.append(el("p", "empty", "No diff text here: past the size cap. See it whole with"), el("code", "cmd", whole));
    return;
  }
  if (diff.truncated) box.append(el("p", "cut", "Cut at the size cap; the whole diff: " + whole));
  const pre = el("pre", "diff");
  pre.tabIndex = 0;  // scrollable with the keyboard
  pre.setAttribute("aria-label", "Diff of " + file.path);
  const frag = document.createDocumentFragment();
  const lines = diff.text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  lines.forEach((line) => frag.append(diffLine(line)));
  pre.append(frag);
  box.append(pre);
}

function summary(changes) {
  const box = $("changes-summary");
  box.replaceChildren();
  if (!changes) return;
  box.append(el("code", "branch", changes.branch), el("span", "muted", short(changes.base) + " → " + short(changes.tip)));
  if (changes.store) {
    // A folder without git: its files were imported; apply writes the changed ones back into it.
    const until = changes.folder ? "until orchestrate apply writes the changed files into " + changes.folder
      : "until orchestrate apply";
    const where = el("span", "muted store", "in the session's store " + until);
    where.title = "git --git-dir " + changes.store + " log " + changes.branch;
    box.append(where);
  }
  box.append(el("span", null, changes.files.length + " file" + (changes.files.length === 1 ? "" : "s")), counts(changes));
  if (changes.truncated) box.append(el("span", "cut", "some diffs cut"));
}

export function renderChanges() {
  const root = $("changes");
  const data = state.changes;
  const changes = data && data.workspace === "branch" ? data.changes : null;
  const focused = document.activeElement && root.contains(document.activeElement) ? document.activeElement.dataset.path : undefined;
  summary(changes);
  $("changes-modes").hidden = !(changes && changes.files.length);
  root.replaceChildren();
  if (data && data.workspace === "in_place") {
    root.append(el("p", "empty", "In place: the agents write straight into the target, nothing to undo."));
    if (data.reason) root.append(el("p", "muted reason", data.reason));
    return;
  }
  if (!changes || !changes.files.length) {
    const merged = changes && changes.assignments.length;
    root.append(el("p", "empty", merged ? "The merged work leaves no difference against the base." : "No changes merged yet."));
    return;
  }
  if (panel.selected !== null && !changes.files.some((f) => f.path === panel.selected)) panel.selected = null;
  const list = el("div", "changes-list");
  list.append(panel.mode === "files" ? fileList(changes.files) : assignmentGroups(changes));
  const diff = el("div", "changes-diff");
  diff.id = "changes-diff";
  renderDiff(diff, changes);
  root.append(list, diff);
  if (focused !== undefined) {
    const again = Array.from(root.querySelectorAll(".change-file")).find((b) => b.dataset.path === focused);
    if (again) again.focus();
  }
}

// A click shows one file's diff; the list stays as it is (its focus and its scroll).
function select(path) {
  const data = state.changes;
  const box = $("changes-diff");
  if (!box || !data || !data.changes) return;
  panel.selected = path;
  $("changes").querySelectorAll(".change-file").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.path === path)));
  renderDiff(box, data.changes);
}

function setMode(mode) {
  panel.mode = mode;
  $("changes-by-file").setAttribute("aria-pressed", String(mode === "files"));
  $("changes-by-assignment").setAttribute("aria-pressed", String(mode === "assignments"));
  renderChanges();
}

// Up and down move between the files of the list; Enter and Space press a file (a button).
function onKey(ev) {
  const current = ev.target.closest(".change-file");
  if (!current || (ev.key !== "ArrowDown" && ev.key !== "ArrowUp")) return;
  const all = Array.from($("changes").querySelectorAll(".change-file"));
  const next = all[all.indexOf(current) + (ev.key === "ArrowDown" ? 1 : -1)];
  if (next) { next.focus(); ev.preventDefault(); }
}

export function setupChanges() {
  $("changes").addEventListener("click", (ev) => {
    const button = ev.target.closest(".change-file");
    if (button) select(button.dataset.path);
  });
  $("changes").addEventListener("keydown", onKey);
  $("changes-by-file").onclick = () => setMode("files");
  $("changes-by-assignment").onclick = () => setMode("assignments");
}
