// The OAuth 2.0 sign-in page in a real browser: Debian's chromium (/usr/bin/chromium) driven by
// playwright-core (PLAYWRIGHT_CORE, installed by ./scripts/test). Opens AUTHORIZE_URL, then
// either signs in with a password (LOGIN_PASSWORD set: USERNAME and LOGIN_PASSWORD) or presses
// the upstream provider's button and signs in there as PROVIDER_LOGIN (the provider's
// development pages: any password, then its consent). The client's redirect URI
// (REDIRECT_PREFIX) is intercepted: nothing listens there. Prints one JSON line: the page's
// language, the redirect the browser was sent to (or null), the alert shown (or null), and the
// notice a page that ends there shows (`status`, or null: the device grant's page).
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
const authorize = env("AUTHORIZE_URL");
const redirectPrefix = env("REDIRECT_PREFIX");
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
const entry = path.join(env("PLAYWRIGHT_CORE"), "node_modules/playwright-core/index.mjs");
if (!fs.existsSync(entry) || !fs.existsSync(chromium)) {
  console.error("playwright-core or chromium is missing: run ./scripts/test, which installs them");
  process.exit(2);
}
const { chromium: launcher } = await import(pathToFileURL(entry).href);
const browser = await launcher.launch({ executablePath: chromium, args: ["--no-sandbox"] });
const seen = { lang: null, redirect: null, alert: null, status: null, buttons: [] };
try {
  const context = await browser.newContext({ locale: process.env.BROWSER_LOCALE || "fr-FR" });
  const page = await context.newPage();
  let redirected;
  const arrived = new Promise((resolve) => (redirected = resolve));
  // The redirect is seen as a request of the navigation's redirect chain (nothing answers at
  // the client's address), and answered by the route when the browser lets it be intercepted.
  page.on("request", (request) => {
    if (request.url().startsWith(redirectPrefix) && !seen.redirect) {
      seen.redirect = request.url();
      redirected();
    }
  });
  await page.route(`${redirectPrefix}**`, (route) => {
    seen.redirect = route.request().url();
    route.fulfill({ status: 200, contentType: "text/plain", body: "back at the client" });
    redirected();
  });
  // Every navigation and failed request on stderr, which the test shows when it fails.
  page.on("framenavigated", (frame) => frame === page.mainFrame() && console.error(`navigated to ${frame.url()}`));
  page.on("requestfailed", (request) => console.error(`failed: ${request.url()} ${request.failure()?.errorText}`));
  await page.goto(authorize);
  seen.lang = await page.getAttribute("html", "lang");
  seen.buttons = await page.locator("button").allTextContents();
  if (process.env.LOGIN_PASSWORD) {
    await page.fill("#username", env("USERNAME"));
    await page.fill("#password", process.env.LOGIN_PASSWORD);
    await page.click('button[value="allow"]');
  } else {
    // From the sign-in page, its provider button; `m.login.sso` starts at the provider itself.
    const button = page.locator('form[action$="/upstream/start"] button');
    if ((await button.count()) > 0) {
      await button.first().click();
    }
    await page.waitForSelector('input[name="login"]');
    await page.fill('input[name="login"]', env("PROVIDER_LOGIN"));
    await page.fill('input[name="password"]', "any");
    await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
    // The provider's consent page, the first time.
    if (!seen.redirect && page.url().includes("/interaction/")) {
      await page.waitForSelector('button[type="submit"]');
      await page.click('button[type="submit"]');
    }
  }
  await Promise.race([
    arrived,
    page.waitForSelector('[role="alert"], [role="status"], a.button', { timeout: 20000 }).catch(() => {}),
  ]);
  // m.login.sso: the page asking where the session goes, then on to the client.
  if (!seen.redirect && (await page.locator("a.button").count()) > 0) {
    seen.confirm = (await page.locator("main").textContent()).trim();
    await page.click("a.button");
    await Promise.race([arrived, page.waitForTimeout(10000)]);
  }
  if (!seen.redirect) {
    const alert = page.locator('[role="alert"]');
    seen.alert = (await alert.count()) > 0 ? (await alert.first().textContent()).trim() : null;
    const status = page.locator('[role="status"]');
    seen.status = (await status.count()) > 0 ? (await status.first().textContent()).trim() : null;
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
