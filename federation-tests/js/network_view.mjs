// The console's network view in a real browser while a pair of nodes is cut and a room split:
// Debian's chromium driven by playwright-core (PLAYWRIGHT_CORE names the folder holding
// node_modules/playwright-core; both installed by ./scripts/test). Signs in with the keyboard,
// opens the network page, takes its screenshots (laptop and phone widths: docs/console's
// network.png and network-phone.png) and prints one JSON line: the reachability matrix cell by
// cell, the problems listed, how many pair plots were drawn and which show a cut. A script
// error or a Content-Security-Policy violation fails the run.
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
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
const entry = path.join(env("PLAYWRIGHT_CORE"), "node_modules/playwright-core/index.mjs");
if (!fs.existsSync(entry) || !fs.existsSync(chromium)) {
  console.error(`playwright-core (${entry}) or chromium (${chromium}) is missing: run ./scripts/test`);
  process.exit(2);
}
const { chromium: launcher } = await import(pathToFileURL(entry).href);
fs.mkdirSync(shots, { recursive: true });

const seen = { errors: [] };
const browser = await launcher.launch({ executablePath: chromium, args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => seen.errors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") seen.errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  await page.goto(`${base}/_hemicycle/console/login`);
  await page.getByLabel("User name or Matrix ID").fill(admin);
  await page.getByLabel("Password").fill(password);
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")]);
  await page.getByRole("link", { name: "Network" }).click();
  const heading = await page.locator("h1").innerText();
  if (heading !== "Network") throw new Error(`the network page did not open: ${heading}`);
  const matrix = page.locator("table.matrix");
  seen.matrix_head = await matrix.locator("thead th").allInnerTexts();
  seen.matrix_rows = await matrix
    .locator("tbody tr")
    .evaluateAll((rows) => rows.map((row) => [...row.children].map((cell) => cell.innerText.replace(/\s+/g, " ").trim())));
  seen.problems = await page.locator("ul.problems").innerText();
  seen.pair_plots = await page.locator("table.pairs svg.spark").count();
  seen.cut_minutes = await page.locator("table.pairs svg.spark rect.cut").count();
  seen.cut_labels = await page
    .locator("table.pairs svg.spark")
    .evaluateAll((plots) => plots.filter((p) => p.querySelector("rect.cut")).map((p) => p.getAttribute("aria-label")));
  await page.screenshot({ path: path.join(shots, "network.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: path.join(shots, "network-phone.png"), fullPage: true });
  if (seen.errors.length > 0) throw new Error(seen.errors.join("\n"));
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
