// The library browser widget: a document library's folders and files (MSC3089 trees), with
// their versions and locks, read and changed (files moved, deleted, locked) through the
// workspace's REST API (the same code as `!doc`, with the user's own rights). Changes by others
// come live in the folder open, a sub-folder included: its room's state is asked for (MSC2974)
// when it is opened. Files travel through the client, never through the appservice: an upload is handed
// to the client (widget API, MSC4039 upload_file) and the resulting mxc:// URI filed; a
// download asks the client for the file's event (read_events, MSC2876, which the client
// decrypts when the room is encrypted) and for its bytes (MSC4039 download_file); an encrypted
// attachment is checked against its SHA-256 and decrypted here, in the browser, with its key.
"use strict";

const { room, lang, api, element, attempt, request } = Widget;
const library = Widget.params.get("library") || "";
const WORDS = {
  fr: { top: "Bibliothèque", open: "Ouvrir le dossier", folderName: "Nom du nouveau dossier", mkdir: "Créer le dossier",
        file: "Fichier à déposer", upload: "Déposer", download: "Télécharger", versions: "Versions", lock: "Verrouiller",
        unlock: "Déverrouiller", locked: "verrouillé", current: "actuelle", previous: "ancienne", empty: "Dossier vide",
        refresh: "Actualiser", path: "Chemin", noEvent: "le client n'a pas donné l'événement de ce fichier",
        badHash: "le fichier téléchargé ne correspond pas à son empreinte", refused: "le client refuse l'accès à ce dossier",
        encryptedUpload: "dossier chiffré : déposez le fichier dans le salon lié, votre client le chiffre",
        folders: "Dossiers", files: "Fichiers", bytes: "o", remove: "Supprimer",
        confirmRemove: "Confirmer la suppression de", move: "Déplacer", moveTo: "Dossier de destination (chemin, « . » pour le haut)",
        moveFile: "Déplacer le fichier",
        notLive: "le client ne transmet pas les changements de ce dossier : actualisez pour les voir" },
  en: { top: "Library", open: "Open the folder", folderName: "Name of the new folder", mkdir: "Make the folder",
        file: "File to add", upload: "Add", download: "Download", versions: "Versions", lock: "Lock",
        unlock: "Unlock", locked: "locked", current: "current", previous: "previous", empty: "Empty folder",
        refresh: "Refresh", path: "Path", noEvent: "the client did not give this file's event",
        badHash: "the downloaded file does not match its hash", refused: "the client refused access to this folder",
        encryptedUpload: "encrypted folder: post the file in the linked room, your client encrypts it",
        folders: "Folders", files: "Files", bytes: "B", remove: "Delete",
        confirmRemove: "Confirm deleting", move: "Move", moveTo: "Target folder (path, \".\" for the top)",
        moveFile: "Move the file",
        notLive: "the client does not pass on this folder's changes: refresh to see them" },
};
const words = WORDS[lang];
const base = `/libraries/${Widget.enc(library)}`;
const listing = document.getElementById("listing");
let folderPath = [];
let current = null;

const pathOf = (name) => [...folderPath, name].join("/");

function fromBase64(text) {
  const s = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(s + "===".slice((s.length + 3) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}
const toBase64 = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/=+$/, "");

// Matrix's attachment encryption (AES-256-CTR, the key as a JWK, SHA-256 of the ciphertext).
async function decrypt(file, cipher) {
  if (!file.key || file.key.alg !== "A256CTR" || !file.iv || !(file.hashes || {}).sha256) {
    throw new Error("unsupported encrypted file");
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", cipher));
  if (toBase64(digest) !== file.hashes.sha256.replace(/=+$/, "")) throw new Error(words.badHash);
  const key = await crypto.subtle.importKey("jwk", { kty: "oct", k: file.key.k, alg: "A256CTR", ext: true },
    { name: "AES-CTR" }, false, ["decrypt"]);
  return crypto.subtle.decrypt({ name: "AES-CTR", counter: fromBase64(file.iv), length: 64 }, key, cipher);
}

// The file's event, as the client holds it (decrypted when the room is).
async function fileEvent(folder, eventId) {
  if (!(await Widget.more([`org.matrix.msc2762.timeline:${folder}`]))) throw new Error(words.refused);
  const answer = await request("org.matrix.msc2876.read_events",
    { type: "m.room.message", msgtype: "m.file", room_ids: [folder], limit: 500 });
  if (answer.error) throw new Error(answer.error.message);
  const event = (answer.events || []).find((e) => e.event_id === eventId);
  if (!event) throw new Error(words.noEvent);
  return event.content;
}

async function download(folder, eventId, name) {
  const content = await fileEvent(folder, eventId);
  const uri = content.file ? content.file.url : content.url;
  const answer = await request("org.matrix.msc4039.download_file", { content_uri: uri });
  if (answer.error) throw new Error(answer.error.message);
  let bytes = await new Response(answer.file).arrayBuffer();
  if (content.file) bytes = await decrypt(content.file, bytes);
  const type = (content.info || {}).mimetype || "application/octet-stream";
  const link = element("a", { href: URL.createObjectURL(new Blob([bytes], { type })), download: name, hidden: "" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

function size(bytes) {
  if (bytes === undefined || bytes === null) return "";
  if (bytes < 1024) return `${bytes} ${words.bytes}`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} K${words.bytes}`;
  return `${(bytes / 1024 / 1024).toFixed(1)} M${words.bytes}`;
}

function fileItem(file) {
  const title = element("strong", {}, file.name);
  const bytes = file["org.hemicycle.size"];
  const facts = element("span", { class: "facts" },
    `v${file.version}${bytes !== undefined ? ` · ${size(bytes)}` : ""}${file.locked ? ` · ${words.locked}` : ""}`);
  const get = element("button", { type: "button", "data-action": "download" }, words.download);
  get.setAttribute("aria-label", `${words.download} ${file.name}`);
  get.addEventListener("click", () => attempt(() => download(current.room_id, file.event_id, file.name)));
  const lock = element("button", { type: "button", "data-action": "lock", "aria-pressed": String(file.locked),
    "aria-label": `${file.locked ? words.unlock : words.lock} ${file.name}` }, file.locked ? words.unlock : words.lock);
  lock.addEventListener("click", () => attempt(async () => {
    await api("POST", `${base}/files/lock?path=${Widget.enc(pathOf(file.name))}`, { locked: !file.locked });
    await load();
  }));
  const history = element("details", {}, element("summary", {}, `${words.versions} (${file.name})`));
  history.addEventListener("toggle", () => {
    if (!history.open) return;
    attempt(async () => {
      const { versions } = await api("GET", `${base}/files/history?path=${Widget.enc(pathOf(file.name))}`);
      const list = element("ol", { class: "versions" });
      for (const v of versions) {
        const b = element("button", { type: "button", "aria-label": `${words.download} ${file.name} v${v.version}` },
          words.download);
        b.addEventListener("click", () => attempt(() => download(current.room_id, v.event_id, file.name)));
        list.append(element("li", {}, `v${v.version} — ${v.active ? words.current : words.previous} `, b));
      }
      history.querySelector("ol")?.remove();
      history.append(list);
    });
  });
  // Deleting asks once more.
  const remove = element("button", { type: "button", "data-action": "delete", "aria-expanded": "false",
    "aria-label": `${words.remove} ${file.name}` }, words.remove);
  const confirm = element("button", { type: "button", "data-action": "confirm-delete", hidden: "" },
    `${words.confirmRemove} ${file.name}`);
  remove.addEventListener("click", () => {
    confirm.hidden = false;
    remove.setAttribute("aria-expanded", "true");
    confirm.focus();
  });
  confirm.addEventListener("click", () => attempt(async () => {
    await api("DELETE", `${base}/files?path=${Widget.enc(pathOf(file.name))}`);
    await load();
  }));
  return element("li", { class: "card file", "data-name": file.name }, title, facts,
    element("span", { class: "actions" }, get, lock, remove, confirm), mover(file), history);
}

// Moves a file to another folder of the library, named by its path (as `!doc mv`).
function mover(file) {
  const id = `move-${[...folderPath, file.name].join("/").replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const target = element("input", { id, name: "to", autocomplete: "off", list: "folder-paths" });
  const form = element("form", { class: "edit", "data-name": file.name },
    element("label", { for: id }, words.moveTo), target,
    element("button", { type: "submit" }, words.moveFile));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      await api("POST", `${base}/files/move?path=${Widget.enc(pathOf(file.name))}`, { to: target.value.trim() });
      await load();
    });
  });
  return element("details", { class: "move" }, element("summary", {}, `${words.move} (${file.name})`), form);
}

function crumbs() {
  const nav = document.getElementById("crumbs");
  nav.setAttribute("aria-label", words.path);
  const list = element("ol", {});
  const names = [words.top, ...folderPath];
  names.forEach((name, i) => {
    const last = i === names.length - 1;
    const b = element("button", { type: "button", ...(last ? { "aria-current": "location" } : {}) }, name);
    b.addEventListener("click", () => attempt(async () => {
      folderPath = folderPath.slice(0, i);
      await load();
    }));
    list.append(element("li", {}, b));
  });
  const refresh = element("button", { type: "button", "data-action": "refresh" }, words.refresh);
  refresh.addEventListener("click", () => attempt(load));
  nav.replaceChildren(list, refresh);
}

const ticket = Widget.tickets();

async function load() {
  const newest = ticket();
  const answer = await api("GET", `${base}/files?path=${Widget.enc(folderPath.join("/"))}`);
  if (!newest()) return;
  current = answer;
  // A sub-folder is a room of its own: its changes come live only once the client lets us
  // receive its state (the top's was asked at start).
  const live = current.room_id === library || (await Widget.more([`org.matrix.msc2762.timeline:${current.room_id}`]));
  if (!newest()) return;
  crumbs();
  const folders = element("ul", { class: "folders", "aria-labelledby": "h-folders" });
  for (const folder of [...current.folders].sort((a, b) => a.name.localeCompare(b.name))) {
    const b = element("button", { type: "button", class: "folder", "data-name": folder.name,
      "aria-label": `${words.open} ${folder.name}` }, `${folder.name}/`);
    b.addEventListener("click", () => attempt(async () => {
      folderPath = [...folderPath, folder.name];
      await load();
    }));
    folders.append(element("li", {}, b));
  }
  const files = element("ul", { class: "files", "aria-labelledby": "h-files" });
  for (const file of [...current.files].sort((a, b) => a.name.localeCompare(b.name))) files.append(fileItem(file));
  const parts = [];
  if (current.folders.length) parts.push(element("h2", { id: "h-folders" }, words.folders), folders);
  if (current.files.length) parts.push(element("h2", { id: "h-files" }, words.files), files);
  if (!parts.length) parts.push(element("p", { class: "empty" }, words.empty));
  // Targets offered for moves: the top, the parent and the sub-folders here.
  const paths = new Set(["."]);
  if (folderPath.length > 1) paths.add(folderPath.slice(0, -1).join("/"));
  for (const folder of current.folders) paths.add([...folderPath, folder.name].join("/"));
  const datalist = element("datalist", { id: "folder-paths" }, ...[...paths].map((p) => element("option", { value: p })));
  listing.replaceChildren(...parts, datalist);
  Widget.loaded();
  if (!live) Widget.say(words.notLive);
}

function forms() {
  const mkdir = document.getElementById("mkdir");
  const name = element("input", { id: "folder-name", name: "name", required: "", maxlength: "255", autocomplete: "off" });
  mkdir.append(element("label", { for: "folder-name" }, words.folderName), name,
    element("button", { type: "submit" }, words.mkdir));
  mkdir.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      await api("POST", `${base}/folders?path=${Widget.enc(folderPath.join("/"))}`, { name: name.value.trim() });
      mkdir.reset();
      await load();
    });
  });
  const upload = document.getElementById("upload");
  const input = element("input", { id: "upload-file", name: "file", type: "file", required: "" });
  upload.append(element("label", { for: "upload-file" }, words.file), input,
    element("button", { type: "submit" }, words.upload));
  upload.addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(async () => {
      // The appservice would post the file's event in the clear: in an encrypted folder the
      // client's own encrypted post (in the linked room) is the way in.
      if (current && current.encrypted) throw new Error(words.encryptedUpload);
      for (const file of input.files) {
        const answer = await request("org.matrix.msc4039.upload_file", { file });
        if (answer.error) throw new Error(answer.error.message);
        const info = { size: file.size, mimetype: file.type || "application/octet-stream" };
        await api("POST", `${base}/files?path=${Widget.enc(pathOf(file.name))}`, { url: answer.content_uri, info });
      }
      upload.reset();
      await load();
    });
  });
}

forms();
Widget.start({
  capabilities: [
    `org.matrix.msc2762.timeline:${library}`,
    "org.matrix.msc2762.receive.event:m.room.message#m.file",
    "org.matrix.msc2762.receive.state_event:org.matrix.msc3089.branch",
    "org.matrix.msc2762.receive.state_event:m.space.child",
    "org.matrix.msc4039.upload_file",
    "org.matrix.msc4039.download_file",
  ],
  onUpdate: () => attempt(load),
  ready: load,
});
