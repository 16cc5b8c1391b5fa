// The workspace's library browser in a real browser (widget-browser.mjs). Sees the folder made
// in the chat (CHAT_FOLDER), makes a folder (WIDGET_FOLDER), uploads note.txt twice (two
// versions, through the client: MSC4039), locks it, lists its versions, then posts an encrypted
// attachment (secret.txt, AES-256-CTR with node's crypto, as Matrix clients encrypt
// attachments) in the linked room (WORK_ROOM) as the user, waits for the bot's filing to appear
// (live), and downloads it through the widget, which decrypts it in the browser.
import crypto from "node:crypto";
import fs from "node:fs";
import { env, run } from "./widget-browser.mjs";

const chatFolder = env("CHAT_FOLDER");
const widgetFolder = env("WIDGET_FOLDER");
const homeserver = env("HOMESERVER");
const token = env("ACCESS_TOKEN");
const workRoom = env("WORK_ROOM");
const secret = "Note chiffrée : le budget 2027 est confidentiel.\n";

const b64 = (bytes) => Buffer.from(bytes).toString("base64").replace(/=+$/, "");
const b64url = (bytes) => b64(bytes).replace(/\+/g, "-").replace(/\//g, "_");

// Encrypts and posts an attachment as a Matrix client does; the server only sees ciphertext.
async function postEncrypted(name, text) {
  const key = crypto.randomBytes(32);
  const iv = Buffer.concat([crypto.randomBytes(8), Buffer.alloc(8)]);
  const cipher = crypto.createCipheriv("aes-256-ctr", key, iv);
  const data = Buffer.concat([cipher.update(Buffer.from(text)), cipher.final()]);
  const auth = { Authorization: `Bearer ${token}` };
  const upload = await fetch(`${homeserver}/_matrix/media/v3/upload`, {
    method: "POST", headers: { ...auth, "Content-Type": "application/octet-stream" }, body: data,
  });
  if (!upload.ok) throw new Error(`upload: HTTP ${upload.status}`);
  const url = (await upload.json()).content_uri;
  const file = {
    url, v: "v2", iv: b64(iv), hashes: { sha256: b64(crypto.createHash("sha256").update(data).digest()) },
    key: { kty: "oct", alg: "A256CTR", ext: true, key_ops: ["encrypt", "decrypt"], k: b64url(key) },
  };
  const content = { msgtype: "m.file", body: name, file, info: { size: text.length, mimetype: "text/plain" } };
  const sent = await fetch(`${homeserver}/_matrix/client/v3/rooms/${encodeURIComponent(workRoom)}/send/m.room.message/enc-${Date.now()}`, {
    method: "PUT", headers: { ...auth, "Content-Type": "application/json" }, body: JSON.stringify(content),
  });
  if (!sent.ok) throw new Error(`send: HTTP ${sent.status}`);
}

await run(async ({ page, widget, seen }) => {
  const reloaded = async (action) => {
    const before = await widget.locator("body").getAttribute("data-loaded");
    await action();
    await widget.locator(`body:not([data-loaded="${before}"])`).waitFor({ timeout: 30000 });
  };
  const file = (name) => widget.locator(`li.file[data-name="${name}"]`);
  // Made in the chat.
  await widget.locator(`button.folder[data-name="${chatFolder}"]`).waitFor({ timeout: 30000 });

  // A folder made here.
  await widget.getByLabel(/new folder/).fill(widgetFolder);
  await widget.getByRole("button", { name: "Make the folder" }).click();
  await widget.locator(`button.folder[data-name="${widgetFolder}"]`).waitFor({ timeout: 30000 });

  // note.txt uploaded twice: two versions.
  for (const text of ["première version\n", "seconde version, plus longue\n"]) {
    await widget.getByLabel("File to add").setInputFiles({ name: "note.txt", mimeType: "text/plain", buffer: Buffer.from(text) });
    await reloaded(() => widget.getByRole("button", { name: "Add", exact: true }).click());
  }
  await file("note.txt").locator(".facts", { hasText: "v2" }).waitFor({ timeout: 30000 });
  await reloaded(() => file("note.txt").locator('[data-action="lock"]').click());
  await file("note.txt").locator('[data-action="lock"][aria-pressed="true"]').waitFor({ timeout: 30000 });
  seen.note = await file("note.txt").locator(".facts").innerText();
  await file("note.txt").locator("summary", { hasText: "Versions" }).click();
  await file("note.txt").locator(".versions li").nth(1).waitFor({ timeout: 30000 });
  seen.versions = await file("note.txt").locator(".versions li").allInnerTexts();

  // An encrypted attachment posted in the linked room: filed by the bot, shown live.
  await postEncrypted("secret.txt", secret);
  await file("secret.txt").waitFor({ timeout: 30000 });
  const [download] = await Promise.all([
    page.waitForEvent("download", { timeout: 30000 }),
    file("secret.txt").locator('[data-action="download"]').click(),
  ]);
  seen.downloadName = download.suggestedFilename();
  seen.downloaded = fs.readFileSync(await download.path(), "utf8");
  seen.secretMatches = seen.downloaded === secret;
});
