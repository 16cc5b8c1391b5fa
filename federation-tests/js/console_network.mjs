// What the console's browser scripts share: Debian's chromium driven by playwright-core
// (PLAYWRIGHT_CORE names the folder holding node_modules/playwright-core; both installed by
// ./scripts/test), signed in with the keyboard and on the network page. `withNetworkPage` runs
// `read(page)` there, takes the page's screenshots at laptop and phone widths (network.png and
// network-phone.png) and prints one JSON line: what `read` found. A script error or a
// Content-Security-Policy violation fails the run.
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

export async function withNetworkPage(read) {
  const base = env("CONSOLE_URL");
  const admin = env("CONSOLE_ADMIN");
  const password = env("CONSOLE_PASSWORD");
  const shots = env("CONSOLE_SCREENSHOTS");
  const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
  const entry = path.join(env("PLAYWRIGHT_CORE"), "node_modules/playwright-core/index.mjs");
  if (!fs.existsSync(entry) || !fs.existsSync(chromium)) {
    console.error(`playwright-core (${entry}) or chromium (${chromium}) is missing: run ./scripts/test`);
    process.exit(2);
  }
  const { chromium: launcher } = await import(pathToFileURL(entry).href);
  fs.mkdirSync(shots, { recursive: true });

  const errors = [];
  const browser = await launcher.launch({ executablePath: chromium, args: ["--no-sandbox"] });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console: ${m.text()} (${m.location().url})`);
    });
    await page.goto(`${base}/_hemicycle/console/login`);
    await page.getByLabel("User name or Matrix ID").fill(admin);
    await page.getByLabel("Password").fill(password);
    await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")]);
    await page.getByRole("link", { name: "Network" }).click();
    const heading = await page.locator("h1").innerText();
    if (heading !== "Network") throw new Error(`the network page did not open: ${heading}`);
    const seen = await read(page);
    await page.screenshot({ path: path.join(shots, "network.png"), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: path.join(shots, "network-phone.png"), fullPage: true });
    if (errors.length > 0) throw new Error(errors.join("\n"));
    console.log(JSON.stringify({ errors, ...seen }));
  } finally {
    await browser.close();
  }
}
