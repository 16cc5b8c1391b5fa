// The workspace's calendar widget in a real browser (widget-browser.mjs). Today is the
// appservice's (2026-11-30, a Monday). Finds the weekly entry made in the chat (CHAT_TITLE,
// from 2026-12-02, three times) in the month views and the week view, makes a weekly entry in
// the widget (WIDGET_TITLE, 2026-12-03 14:00, twice), answers "yes" to the chat's entry, and
// waits for an entry sent in the chat meanwhile to appear (live).
import { env, run } from "./widget-browser.mjs";

const chatTitle = env("CHAT_TITLE");
const widgetTitle = env("WIDGET_TITLE");

await run(async ({ page, widget, seen }) => {
  const occurrences = (title) => widget.locator("button.occurrence", { hasText: title });
  const step = async (name) => {
    const before = await widget.locator("body").getAttribute("data-loaded");
    await widget.locator(`[data-step="${name}"], [data-mode="${name}"]`).click();
    await widget.locator(`body:not([data-loaded="${before}"])`).waitFor({ timeout: 30000 });
  };
  seen.period = await widget.locator("#period").innerText();
  // November's grid ends with the week of December 2nd: one occurrence there.
  await occurrences(chatTitle).first().waitFor({ timeout: 30000 });
  seen.novemberCount = await occurrences(chatTitle).count();
  await step("next");
  seen.decemberPeriod = await widget.locator("#period").innerText();
  seen.decemberCount = await occurrences(chatTitle).count();
  await step("today");
  await step("week");
  seen.weekPeriod = await widget.locator("#period").innerText();
  seen.weekCount = await occurrences(chatTitle).count();
  seen.weekDays = await widget.locator("ol.days > li").count();

  // Made in the widget, with the labelled fields of its form.
  const form = widget.locator("#add");
  await form.getByLabel("Title", { exact: true }).fill(widgetTitle);
  await form.getByLabel("Date", { exact: true }).fill("2026-12-03");
  await form.getByLabel("Time", { exact: true }).fill("14:00");
  await form.getByLabel("Repeat", { exact: true }).selectOption("FREQ=WEEKLY");
  await form.getByLabel("Number of times").fill("2");
  await form.getByLabel("Location", { exact: true }).fill("Salle 4");
  await form.getByRole("button", { name: "Add to the calendar" }).click();
  const made = occurrences(widgetTitle).first();
  await made.waitFor({ timeout: 30000 });
  seen.widgetEntry = await made.getAttribute("data-uid");
  seen.widgetText = await made.innerText();

  // RSVP to the chat's entry.
  await occurrences(chatTitle).first().click();
  await widget.locator("#detail").getByRole("button", { name: "Yes" }).click();
  await widget.locator('#detail button[data-rsvp="yes"][aria-pressed="true"]').waitFor({ timeout: 30000 });
  seen.detail = await widget.locator("#detail").innerText();
  seen.chatEntry = await widget.locator("#detail").getAttribute("data-uid");

  // Sent in the chat: appears in the week shown, without reloading the page.
  await page.evaluate(() => window.sendText('!cal add "Café du vendredi" 2026-12-04 09:00'));
  await occurrences("Café du vendredi").waitFor({ timeout: 30000 });
});
