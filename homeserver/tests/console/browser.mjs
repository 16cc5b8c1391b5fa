// The admins' console in a real browser: Debian's chromium (/usr/bin/chromium) driven by
// playwright-core, both installed by ./scripts/test (PLAYWRIGHT_CORE names the folder holding
// node_modules/playwright-core). Signs in, creates a user, deactivates them, creates a
// registration token, resets a federation connection, signs out, and takes a screenshot of
// every page (at laptop width, plus the node page at phone width). Prints one JSON line: what it
// saw. Any failure exits non-zero with the reason on stderr.
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
const base = env("CONSOLE_URL");
const admin = env("CONSOLE_ADMIN");
const password = env("CONSOLE_PASSWORD");
const shots = env("CONSOLE_SCREENSHOTS");
const destination = env("CONSOLE_DESTINATION");
const newUser = env("CONSOLE_NEW_USER");
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
const entry = path.join(env("PLAYWRIGHT_CORE"), "node_modules/playwright-core/index.mjs");
if (!fs.existsSync(entry)) {
  console.error(`playwright-core is missing at ${entry}: run ./scripts/test, which installs it`);
  process.exit(2);
}
if (!fs.existsSync(chromium)) {
  console.error(`${chromium} is missing: run ./scripts/test, which installs Debian's chromium`);
  process.exit(2);
}
const { chromium: launcher } = await import(pathToFileURL(entry).href);
fs.mkdirSync(shots, { recursive: true });

const seen = { pages: [], errors: [] };
const browser = await launcher.launch({ executablePath: chromium, args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  // Any script error or CSP violation fails the run.
  page.on("pageerror", (e) => seen.errors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") seen.errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  // The console asks before destructive changes; the test says yes.
  page.on("dialog", (d) => d.accept());

  const shot = async (name) => {
    await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
    seen.pages.push(name);
  };
  const expectNotice = async (text) => {
    const notice = page.locator("p.notice");
    await notice.waitFor();
    const got = await notice.innerText();
    if (!got.includes(text)) throw new Error(`expected a notice with "${text}", got "${got}"`);
  };

  await page.goto(`${base}/_hemicycle/console`);
  if (!page.url().endsWith("/_hemicycle/console/login")) throw new Error(`not sent to sign-in: ${page.url()}`);
  await shot("login");
  // Keyboard only, through the labels.
  await page.getByLabel("User name or Matrix ID").fill(admin);
  await page.getByLabel("Password").fill(password);
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")]);
  if (page.url() !== `${base}/_hemicycle/console`) {
    throw new Error(`sign-in did not open the console (${page.url()}): ${await page.locator("main").innerText()}`);
  }
  const heading = await page.locator("h1").innerText();
  if (heading !== "This node") throw new Error(`after sign-in: ${heading}`);
  seen.lang = await page.locator("html").getAttribute("lang");
  await shot("node");

  await page.getByRole("link", { name: "Users" }).click();
  await page.getByLabel("User name (the part before").fill(newUser);
  await page.locator("#new-password").fill("console-made-pw");
  await page.getByRole("button", { name: "Create the account" }).click();
  await expectNotice("created");
  await page.getByLabel("New password").fill("console-reset-pw");
  await page.getByRole("button", { name: "Set the password" }).click();
  await expectNotice("password");
  await page.getByRole("button", { name: "Deactivate the account" }).click();
  await expectNotice("deactivated");
  seen.deactivated = await page.locator("dl.facts").innerText();
  await shot("user");
  await page.getByRole("link", { name: "Users" }).click();
  await page.getByLabel("Include deactivated accounts").check();
  await page.getByRole("button", { name: "Search" }).click();
  await shot("users");

  await page.getByRole("link", { name: "Peers" }).click();
  const row = page.locator("tr", { has: page.locator("th", { hasText: destination }) });
  await row.waitFor();
  seen.peerBefore = await row.innerText();
  await shot("peers");
  await row.getByRole("button", { name: "Reset connection" }).click();
  await expectNotice("reset");
  seen.peerAfter = await row.innerText();

  await page.getByRole("link", { name: "Rooms" }).click();
  await shot("rooms");
  const firstRoom = page.locator("tbody th a").first();
  if (await firstRoom.count()) {
    await firstRoom.click();
    await page.locator("h2#members").waitFor();
    await shot("room");
  }

  await page.getByRole("link", { name: "Registration tokens" }).click();
  await page.getByLabel("Uses allowed").fill("3");
  await page.getByRole("button", { name: "Create the token" }).click();
  await expectNotice("created");
  await shot("tokens");

  await page.getByRole("link", { name: "Media" }).click();
  await page.getByLabel("Uploader (Matrix ID)").fill(admin.startsWith("@") ? admin : `@${admin}:localhost`);
  await page.getByRole("button", { name: "Show their media" }).click();
  await shot("media");

  await page.getByRole("link", { name: "Event reports" }).click();
  await shot("reports");

  await page.getByRole("link", { name: "Audit log" }).click();
  seen.audit = await page.locator("tbody").innerText();
  await shot("audit");

  // The same console on a phone.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole("link", { name: "This node" }).click();
  await shot("node-phone");
  await page.setViewportSize({ width: 1280, height: 900 });

  await page.getByRole("button", { name: /Sign out/ }).click();
  await page.waitForURL(/\/_hemicycle\/console\/login/);
  await page.goto(`${base}/_hemicycle/console/users`);
  seen.afterSignOut = new URL(page.url()).pathname;
} finally {
  await browser.close();
}
if (seen.errors.length) {
  console.error(seen.errors.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify(seen));
