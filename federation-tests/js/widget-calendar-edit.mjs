// The calendar widget's edits in a real browser (widget-browser.mjs), on December 2026 (today
// is the appservice's 2026-11-30). Entries made in the chat: COMMITTEE (weekly from 2026-12-02
// 10:00, three times), REVIEW (2026-12-04 09:00) and COFFEE (2026-12-03 08:30). In the widget:
// the committee edited (title, time, location), its occurrence of 2026-12-09 removed with the
// keyboard, the review deleted. In the chat, while the widget is open: the coffee edited, the
// committee's occurrence of 2026-12-16 skipped, the coffee deleted — each seen live.
import { env, run } from "./widget-browser.mjs";

const committee = env("COMMITTEE");
const review = env("REVIEW");
const coffee = env("COFFEE");

await run(async ({ page, widget, seen }) => {
  const of = (uid) => widget.locator(`button.occurrence[data-uid="${uid}"]`);
  const on = (day, uid) => widget.locator(`li[data-day="${day}"] button.occurrence[data-uid="${uid}"]`);
  const gone = (locator) => locator.waitFor({ state: "detached", timeout: 30000 });
  await of(committee).first().waitFor({ timeout: 30000 });
  const before = await widget.locator("body").getAttribute("data-loaded");
  await widget.locator('[data-step="next"]').click();
  await widget.locator(`body:not([data-loaded="${before}"])`).waitFor({ timeout: 30000 });
  await on("2026-12-16", committee).waitFor({ timeout: 30000 });

  // Edited in the widget, with the labelled fields of its form.
  await of(committee).first().click();
  const detail = widget.locator("#detail");
  await detail.locator("summary", { hasText: "Edit the entry" }).click();
  await detail.getByLabel("Title", { exact: true }).fill("Comité élargi");
  await detail.getByLabel("Time", { exact: true }).fill("11:00");
  await detail.getByLabel("Location", { exact: true }).fill("Salle 5");
  await detail.getByRole("button", { name: "Save" }).click();
  await of(committee).filter({ hasText: "11:00 Comité élargi" }).nth(2).waitFor({ timeout: 30000 });

  // One occurrence removed, with the keyboard only: Enter on it, then on "Remove this occurrence".
  await on("2026-12-09", committee).press("Enter");
  await detail.getByRole("button", { name: "Remove this occurrence" }).waitFor({ timeout: 30000 });
  seen.focusInDetail = await widget.locator("#detail").evaluate((d) => d.contains(document.activeElement));
  await detail.getByRole("button", { name: "Remove this occurrence" }).press("Enter");
  await gone(on("2026-12-09", committee));
  seen.committeeAfterWidget = await of(committee).count();

  // Deleted in the widget: asked once more.
  await of(review).click();
  await detail.locator('[data-action="delete"]').click();
  await detail.locator('[data-action="confirm-delete"]').click();
  await gone(of(review));

  // The commands' changes, live.
  await page.evaluate((text) => window.sendText(text), `!cal edit ${coffee} title:"Café long" time:09:00`);
  await of(coffee).filter({ hasText: "09:00 Café long" }).waitFor({ timeout: 30000 });
  await page.evaluate((text) => window.sendText(text), `!cal skip ${committee} 2026-12-16`);
  await gone(on("2026-12-16", committee));
  await page.evaluate((text) => window.sendText(text), `!cal rm ${coffee}`);
  await gone(of(coffee));
  seen.committeeAfterChat = await of(committee).count();
});
