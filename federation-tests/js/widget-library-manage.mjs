// The library browser's moves and deletions in a real browser (widget-browser.mjs). The top
// folder holds a.txt, b.txt and c.txt and the sub-folder FOLDER. In the widget: a.txt moved to
// FOLDER, b.txt deleted (asked once more). Then FOLDER is opened and, while it is, c.txt is
// moved there and locked by commands in the chat: both show live.
import { env, run } from "./widget-browser.mjs";

const folder = env("FOLDER");

await run(async ({ page, widget, seen }) => {
  const file = (name) => widget.locator(`li.file[data-name="${name}"]`);
  const gone = (locator) => locator.waitFor({ state: "detached", timeout: 30000 });
  await file("c.txt").waitFor({ timeout: 30000 });

  // Moved with its labelled form.
  await file("a.txt").locator("details.move summary").click();
  await file("a.txt").getByLabel(/Target folder/).fill(folder);
  await file("a.txt").getByRole("button", { name: "Move the file" }).click();
  await gone(file("a.txt"));

  // Deleted.
  await file("b.txt").locator('[data-action="delete"]').click();
  await file("b.txt").locator('[data-action="confirm-delete"]').click();
  await gone(file("b.txt"));

  // The sub-folder, opened: what the widget moved is there.
  await widget.locator(`button.folder[data-name="${folder}"]`).click();
  await widget.locator('[aria-current="location"]', { hasText: folder }).waitFor({ timeout: 30000 });
  await file("a.txt").waitFor({ timeout: 30000 });

  // Changes by commands in the chat, shown in the open sub-folder without reloading it.
  await page.evaluate((text) => window.sendText(text), `!doc mv c.txt ${folder}`);
  await file("c.txt").waitFor({ timeout: 30000 });
  await page.evaluate((text) => window.sendText(text), `!doc lock ${folder}/c.txt`);
  await file("c.txt").locator('[data-action="lock"][aria-pressed="true"]').waitFor({ timeout: 30000 });
  seen.folderFiles = await widget.locator("li.file").evaluateAll((items) => items.map((i) => i.dataset.name));
});
