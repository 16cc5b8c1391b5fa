// The task board widget: a room's tasks in columns by progress, written through the workspace's
// REST API (the same code as the commands), authenticated with the OpenID token the client hands
// over through the widget API (matrix-widget-api's protocol, spoken here by hand: no framework is
// downloaded). Changes by others arrive as room state the client forwards: the board reloads.
"use strict";

const params = new URLSearchParams(location.search);
const widgetId = params.get("widgetId") || "";
const room = params.get("room") || "";
const parentUrl = params.get("parentUrl");
// Messages are accepted only from, and sent only to, the client that embeds us.
const parentOrigin = parentUrl ? new URL(parentUrl).origin : null;
const lang = (document.documentElement.lang || "fr").startsWith("en") ? "en" : "fr";
const words = {
  fr: { "needs-action": "À faire", "in-process": "En cours", completed: "Terminées", cancelled: "Annulées",
        add: "Ajouter", title: "Titre", due: "Échéance", move: "Déplacer vers", failed: "Échec :",
        waiting: "Connexion au salon…", none: "Aucune tâche" },
  en: { "needs-action": "To do", "in-process": "In progress", completed: "Done", cancelled: "Cancelled",
        add: "Add", title: "Title", due: "Due", move: "Move to", failed: "Failed:",
        waiting: "Connecting to the room…", none: "No tasks" },
}[lang];
const columns = ["needs-action", "in-process", "completed", "cancelled"];

const status = document.getElementById("status");
const board = document.getElementById("board");
let credentials = null;
let sequence = 0;
const pending = new Map();

function post(message) {
  window.parent.postMessage(message, parentOrigin || "*");
}

function request(action, data) {
  const requestId = `hemicycle-${++sequence}`;
  post({ api: "fromWidget", widgetId, requestId, action, data });
  return new Promise((resolve) => pending.set(requestId, resolve));
}

// The client's OpenID answer: at once ("allowed"), or later through openid_credentials.
let openidWaiter = null;
function openidFrom(answer) {
  if (answer && answer.state === "allowed" && answer.access_token && answer.matrix_server_name) {
    credentials = { server: answer.matrix_server_name, token: answer.access_token };
    return true;
  }
  return false;
}

async function askOpenid() {
  const answer = await request("get_openid", {});
  if (openidFrom(answer)) return;
  await new Promise((resolve, reject) => {
    openidWaiter = (later) => (openidFrom(later) ? resolve() : reject(new Error("OpenID refused")));
  });
}

window.addEventListener("message", (event) => {
  if (parentOrigin && event.origin !== parentOrigin) return;
  if (event.source !== window.parent) return;
  const message = event.data;
  if (!message || message.widgetId !== widgetId) return;
  if (message.api === "fromWidget" && message.response && pending.has(message.requestId)) {
    pending.get(message.requestId)(message.response);
    pending.delete(message.requestId);
    return;
  }
  if (message.api !== "toWidget") return;
  let response = {};
  switch (message.action) {
    case "capabilities":
      response = { capabilities: [
        "org.matrix.msc2762.timeline:" + room,
        "org.matrix.msc2762.receive.state_event:org.hemicycle.task",
      ] };
      break;
    case "supported_api_versions":
      response = { supported_versions: ["0.0.1", "0.0.2", "org.matrix.msc2762", "org.matrix.msc2762_update_state"] };
      break;
    case "openid_credentials":
      if (openidWaiter) openidWaiter(message.data);
      break;
    case "send_event":
    case "update_state":
      // Someone changed a task (the chat, the API, another board): read the tasks again.
      if (credentials) load();
      break;
    default:
      break;
  }
  post({ ...message, response });
});

async function api(method, path, body) {
  const response = await fetch(`../api/v1/rooms/${encodeURIComponent(room)}${path}`, {
    method,
    headers: {
      Authorization: `OpenID ${credentials.server} ${credentials.token}`,
      ...(body ? { "Content-Type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return answer;
}

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

async function move(uid, progress) {
  try {
    await api("POST", `/tasks/${encodeURIComponent(uid)}/progress`, { progress });
    await load();
  } catch (error) {
    status.textContent = `${words.failed} ${error.message}`;
  }
}

function card(task) {
  const item = element("li", { class: "card", draggable: "true", "data-uid": task.uid });
  item.append(element("strong", {}, task.title));
  const assignees = Object.keys(task.participants || {});
  if (assignees.length) item.append(element("span", { class: "who" }, assignees.join(", ")));
  if (task.due) {
    const due = task.showWithoutTime ? task.due.slice(0, 10) : task.due.slice(0, 16).replace("T", " ");
    item.append(element("span", { class: task.late ? "due late" : "due" }, `${words.due} ${due}`));
  }
  // Dragging needs a mouse; the list works with a keyboard and on a phone.
  const label = `${words.move} (${task.title})`;
  const select = element("select", { "aria-label": label, "data-uid": task.uid });
  for (const column of columns) {
    const option = element("option", { value: column }, words[column]);
    if (column === task.progress) option.selected = true;
    select.append(option);
  }
  select.addEventListener("change", () => move(task.uid, select.value));
  item.append(select);
  item.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", task.uid));
  return item;
}

async function load() {
  const { tasks } = await api("GET", "/tasks");
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
  status.textContent = "";
  document.body.dataset.loaded = String(Date.now());
}

document.getElementById("add").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { title: form.elements.summary.value.trim() };
  if (!body.title) return;
  if (form.elements.due.value) body.due = form.elements.due.value;
  try {
    await api("POST", "/tasks", body);
    form.reset();
    await load();
  } catch (error) {
    status.textContent = `${words.failed} ${error.message}`;
  }
});

document.querySelector("#add [name=summary]").placeholder = words.title;
document.querySelector("#add [name=due]").setAttribute("aria-label", words.due);
document.querySelector("#add button").textContent = words.add;
status.textContent = words.waiting;

(async () => {
  try {
    await askOpenid();
    await load();
  } catch (error) {
    status.textContent = `${words.failed} ${error.message}`;
  }
})();
