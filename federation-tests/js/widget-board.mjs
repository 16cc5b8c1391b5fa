// The workspace's task board in a real browser: Debian's chromium (/usr/bin/chromium) driven by
// playwright-core (PLAYWRIGHT_CORE names the folder holding node_modules/playwright-core), inside
// the host page of widget-host.js (HOST_URL). Makes a task in the board, sends a command in the
// chat and waits for its task to appear on the board (live), drags the first task to "in
// progress" and moves the second to "done" with its list. Prints one JSON line: what it saw.
// Any failure exits non-zero with the reason on stderr.
import { pathToFileURL } from "node:url";
import path from "node:path";
import fs from "node:fs";

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set (run the tests with ./scripts/test)`);
    process.exit(2);
  }
  return value;
};
const host = env("HOST_URL");
const fromBoard = env("TITLE_FROM_BOARD");
const fromChat = env("TITLE_FROM_CHAT");
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
const entry = path.join(env("PLAYWRIGHT_CORE"), "node_modules/playwright-core/index.mjs");
for (const needed of [entry, chromium]) {
  if (!fs.existsSync(needed)) {
    console.error(`${needed} is missing: run ./scripts/test, which installs it`);
    process.exit(2);
  }
}
const { chromium: launcher } = await import(pathToFileURL(entry).href);

const seen = { errors: [] };
const browser = await launcher.launch({ executablePath: chromium, args: ["--no-sandbox"] });
try {
  // A phone's screen: the board must still work there.
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => seen.errors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") seen.errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  await page.goto(host);
  await page.evaluate(() => window.widgetReady);
  seen.capabilities = await page.evaluate(() => window.requestedCapabilities);
  seen.widgetSrc = await page.evaluate(() => window.widgetSrc);
  const board = page.frameLocator("#widget");
  const column = (progress) => board.locator(`section.column[data-progress="${progress}"]`);
  await column("needs-action").waitFor({ timeout: 30000 });
  seen.lang = await board.locator("html").getAttribute("lang");

  // Made in the board.
  await board.locator("#add [name=summary]").fill(fromBoard);
  await board.locator("#add button[type=submit]").click();
  const boardCard = column("needs-action").locator(".card", { hasText: fromBoard });
  await boardCard.waitFor({ timeout: 30000 });
  seen.boardTask = await boardCard.getAttribute("data-uid");

  // Made in the chat: appears on the board without reloading it.
  await page.evaluate((text) => window.sendText(text), `!task add "${fromChat}"`);
  const chatCard = column("needs-action").locator(".card", { hasText: fromChat });
  await chatCard.waitFor({ timeout: 30000 });
  seen.chatTask = await chatCard.getAttribute("data-uid");

  // Dragged to "in progress"; moved to "done" with the keyboard-friendly list.
  // The board's own drag-and-drop handlers, fed the events a mouse drag makes.
  const frame = page.frames().find((f) => f.url().includes("/widgets/tasks"));
  const dataTransfer = await frame.evaluateHandle(() => new DataTransfer());
  await boardCard.dispatchEvent("dragstart", { dataTransfer });
  await column("in-process").dispatchEvent("dragover", { dataTransfer });
  await column("in-process").dispatchEvent("drop", { dataTransfer });
  await column("in-process").locator(".card", { hasText: fromBoard }).waitFor({ timeout: 30000 });
  await column("needs-action").locator(`select[data-uid="${seen.chatTask}"]`).selectOption("completed");
  await column("completed").locator(".card", { hasText: fromChat }).waitFor({ timeout: 30000 });
  seen.columns = {};
  for (const progress of ["needs-action", "in-process", "completed", "cancelled"]) {
    seen.columns[progress] = await column(progress).locator(".card strong").allInnerTexts();
  }
} catch (error) {
  console.error(`${error.stack || error}\nseen so far: ${JSON.stringify(seen)}`);
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(seen));
