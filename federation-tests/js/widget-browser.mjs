// What the widget tests share: Debian's chromium (/usr/bin/chromium) driven by playwright-core
// (PLAYWRIGHT_CORE names the folder holding node_modules/playwright-core), opening the host page
// of widget-host.js (HOST_URL) on a phone's screen, 375 px wide. `run(steps)` opens it, hands
// `steps` the page, the widget's frame and `seen` (what the test reports), then prints `seen` as
// one JSON line; any failure exits non-zero with the reason and what was seen so far on stderr.
// Script errors and policy violations are collected in `seen.errors`; after the steps, what the
// page shows then is checked for what accessibility and a phone need: `seen.unlabelled` (form
// controls and buttons without an accessible name), `seen.overflow` (pixels the page is wider
// than the screen's frame) and `seen.missingWords` (strings of the widget's WORDS table in one
// language and not the other).
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
    // A phone's screen (the narrowest in common use), in the zone of the agents' ministries.
    const context = await browser.newContext({
      viewport: { width: 375, height: 812 },
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
    const frame = page.frames().find((f) => f.url().includes("/widgets/"));
    Object.assign(seen, await frame.evaluate(() => {
      const named = (el) => el.getAttribute("aria-label") || el.getAttribute("aria-labelledby")
        || (el.labels && el.labels.length > 0) || (el.tagName === "BUTTON" && el.textContent.trim());
      const controls = [...document.querySelectorAll("input, select, textarea, button")];
      /* global WORDS */
      const table = typeof WORDS === "undefined" ? { fr: {}, en: { "WORDS table": true } } : WORDS;
      const only = (a, b) => Object.keys(table[a]).filter((k) => !(k in table[b])).map((k) => `${a}.${k}`);
      return {
        unlabelled: controls.filter((el) => !named(el)).map((el) => el.outerHTML.slice(0, 160)),
        overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
        // What sticks out, to fix an overflow: the elements whose right edge is past the screen's.
        wide: [...document.body.querySelectorAll("*")]
          .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
          .slice(0, 5).map((el) => `${el.outerHTML.slice(0, 100)} → ${Math.round(el.getBoundingClientRect().right)}px`),
        missingWords: [...only("fr", "en"), ...only("en", "fr")],
      };
    }));
  } catch (error) {
    console.error(`${error.stack || error}\nseen so far: ${JSON.stringify(seen)}`);
    await browser.close();
    process.exit(1);
  }
  await browser.close();
  console.log(JSON.stringify(seen));
}
