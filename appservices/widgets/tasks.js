// The task board widget: a room's tasks in columns by progress, written through the workspace's
// REST API (the same code as the commands). Changes by others arrive as room state the client
// forwards: the board reloads (after the edit in progress, if one is open).
"use strict";

const { room, lang, api, element, attempt } = Widget;
const WORDS = {
  fr: { "needs-action": "À faire", "in-process": "En cours", completed: "Terminées", cancelled: "Annulées",
        add: "Ajouter", title: "Titre", due: "Échéance", dueTime: "Heure d'échéance (facultative)",
        move: "Déplacer vers", none: "Aucune tâche", edit: "Modifier", save: "Enregistrer",
        description: "Description", assignees: "Assignés (identifiants Matrix, séparés par des espaces ou des virgules)",
        noAssignees: "personne" },
  en: { "needs-action": "To do", "in-process": "In progress", completed: "Done", cancelled: "Cancelled",
        add: "Add", title: "Title", due: "Due", dueTime: "Due time (optional)",
        move: "Move to", none: "No tasks", edit: "Edit", save: "Save",
        description: "Description", assignees: "Assignees (Matrix ids, separated by spaces or commas)",
        noAssignees: "nobody" },
};
const words = WORDS[lang];
const columns = ["needs-action", "in-process", "completed", "cancelled"];
const board = document.getElementById("board");
const path = `/rooms/${Widget.enc(room)}`;
// A reload that arrived while an edit form was open: done once it is closed.
let stale = false;

async function move(uid, progress) {
  await attempt(async () => {
    await api("POST", `${path}/tasks/${Widget.enc(uid)}/progress`, { progress });
    await load();
  });
}

function field(id, label, input) {
  return element("p", { class: "field" }, element("label", { for: id }, label), input);
}

// The edit form of a task: description, due date (and time), assignees; one PATCH.
function editor(task) {
  const uid = task.uid;
  const id = (name) => `${name}-${uid}`;
  const description = element("textarea", { id: id("description"), name: "description", rows: "3", maxlength: "10000" });
  description.value = task.description || "";
  const dueDate = element("input", { id: id("due"), name: "due", type: "date" });
  const dueTime = element("input", { id: id("time"), name: "time", type: "time" });
  if (task.due) {
    dueDate.value = task.due.slice(0, 10);
    if (!task.showWithoutTime) dueTime.value = task.due.slice(11, 16);
  }
  const assignees = element("input", { id: id("assignees"), name: "assignees", autocomplete: "off" });
  assignees.value = Object.keys(task.participants || {}).join(", ");
  const form = element("form", { class: "edit", "data-uid": uid },
    field(id("description"), words.description, description),
    field(id("due"), words.due, dueDate),
    field(id("time"), words.dueTime, dueTime),
    field(id("assignees"), words.assignees, assignees),
    element("button", { type: "submit" }, words.save));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const due = dueDate.value ? (dueTime.value ? `${dueDate.value}T${dueTime.value}` : dueDate.value) : "";
    const body = {
      description: description.value,
      due,
      assignees: assignees.value.split(/[\s,]+/).filter(Boolean),
    };
    await attempt(async () => {
      await api("PATCH", `${path}/tasks/${Widget.enc(uid)}`, body);
      details.open = false;
      await load();
    });
  });
  const details = element("details", {}, element("summary", {}, `${words.edit} (${task.title})`), form);
  details.addEventListener("toggle", () => {
    if (!details.open && stale) load();
  });
  return details;
}

function card(task) {
  const item = element("li", { class: "card", draggable: "true", "data-uid": task.uid });
  item.append(element("strong", {}, task.title));
  const assignees = Object.keys(task.participants || {});
  item.append(element("span", { class: "who" }, assignees.length ? assignees.join(", ") : words.noAssignees));
  if (task.due) {
    const due = task.showWithoutTime ? task.due.slice(0, 10) : task.due.slice(0, 16).replace("T", " ");
    item.append(element("span", { class: task.late ? "due late" : "due" }, `${words.due} ${due}`));
  }
  if (task.description) item.append(element("p", { class: "description" }, task.description));
  // Dragging needs a mouse; the list works with a keyboard and on a phone.
  const select = element("select", { "aria-label": `${words.move} (${task.title})`, "data-uid": task.uid });
  for (const column of columns) {
    const option = element("option", { value: column }, words[column]);
    if (column === task.progress) option.selected = true;
    select.append(option);
  }
  select.addEventListener("change", () => move(task.uid, select.value));
  item.append(select, editor(task));
  item.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", task.uid));
  return item;
}

const ticket = Widget.tickets();

async function load() {
  if (board.querySelector("details[open]")) {
    stale = true;
    return;
  }
  stale = false;
  const newest = ticket();
  const { tasks } = await api("GET", `${path}/tasks`);
  if (!newest()) return;
  board.replaceChildren();
  for (const column of columns) {
    const list = element("ul", { "aria-labelledby": `h-${column}` });
    for (const task of tasks.filter((t) => t.progress === column)) list.append(card(task));
    if (!list.children.length) list.append(element("li", { class: "empty" }, words.none));
    const section = element("section", { class: "column", "data-progress": column },
      element("h2", { id: `h-${column}` }, words[column]), list);
    section.addEventListener("dragover", (e) => e.preventDefault());
    section.addEventListener("drop", (e) => {
      e.preventDefault();
      const uid = e.dataTransfer.getData("text/plain");
      if (uid) move(uid, column);
    });
    board.append(section);
  }
  Widget.loaded();
}

document.getElementById("add").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { title: form.elements.summary.value.trim() };
  if (!body.title) return;
  if (form.elements.due.value) body.due = form.elements.due.value;
  await attempt(async () => {
    await api("POST", `${path}/tasks`, body);
    form.reset();
    await load();
  });
});

document.querySelector("#add [name=summary]").placeholder = words.title;
document.querySelector("#add [name=due]").setAttribute("aria-label", words.due);
document.querySelector("#add button").textContent = words.add;

Widget.start({
  capabilities: [`org.matrix.msc2762.timeline:${room}`, "org.matrix.msc2762.receive.state_event:org.hemicycle.task"],
  onUpdate: (event) => {
    if (!event || event.type === "org.hemicycle.task" || event.state) attempt(load);
  },
  ready: load,
});
