// What the widget tests share: Debian's chromium (/usr/bin/chromium) driven by playwright-core
// (PLAYWRIGHT_CORE names the folder holding node_modules/playwright-core), opening the host page
// of widget-host.js (HOST_URL) on a phone-sized screen. `run(steps)` opens it, hands `steps` the
// page, the widget's frame and `seen` (what the test reports), then prints `seen` as one JSON
// line; any failure exits non-zero with the reason and what was seen so far on stderr. Script
// errors and policy violations are collected in `seen.errors`.
import { pathToFileURL } from "node:url";
import path from "node:path";
import fs from "node:fs";

export const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set (run the tests with ./scripts/test)`);
    process.exit(2);
  }
  return value;
};

export async function run(steps) {
  const host = env("HOST_URL");
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
    // A phone's screen, in the zone of the agents' ministries.
    const context = await browser.newContext({
      viewport: { width: 390, height: 844 },
      timezoneId: "Europe/Paris",
      acceptDownloads: true,
    });
    const page = await context.newPage();
    page.on("pageerror", (e) => seen.errors.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") seen.errors.push(`console: ${m.text()} (${m.location().url})`);
    });
    await page.goto(host);
    await page.evaluate(() => window.widgetReady);
    seen.widgetSrc = await page.evaluate(() => window.widgetSrc);
    const widget = page.frameLocator("#widget");
    await widget.locator("body[data-loaded]").waitFor({ timeout: 30000 });
    seen.lang = await widget.locator("html").getAttribute("lang");
    await steps({ page, widget, seen });
    seen.capabilities = await page.evaluate(() => window.requestedCapabilities);
  } catch (error) {
    console.error(`${error.stack || error}\nseen so far: ${JSON.stringify(seen)}`);
    await browser.close();
    process.exit(1);
  }
  await browser.close();
  console.log(JSON.stringify(seen));
}
