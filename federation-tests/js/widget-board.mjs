// The workspace's task board in a real browser (widget-browser.mjs). Makes a task in the board,
// sends a command in the chat and waits for its task to appear on the board (live), drags the
// first task to "in progress" and moves the second to "done" with its list, edits the first
// (description, due date, assignee), and waits for an assignee and a description set in the
// chat to show on the second (live).
import { env, run } from "./widget-browser.mjs";

const fromBoard = env("TITLE_FROM_BOARD");
const fromChat = env("TITLE_FROM_CHAT");
const assignee = env("ASSIGNEE");

await run(async ({ page, widget: board, seen }) => {
  const column = (progress) => board.locator(`section.column[data-progress="${progress}"]`);
  await column("needs-action").waitFor({ timeout: 30000 });

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

  // Edited in the board, with the labelled fields of its form.
  const edited = column("in-process").locator(`.card[data-uid="${seen.boardTask}"]`);
  await edited.locator("summary").click();
  await edited.getByLabel(/Description/).fill("Chiffrer les trois scénarios");
  await edited.getByLabel(/^Due$/).fill("2026-12-15");
  await edited.getByLabel(/Assignees/).fill(assignee);
  await edited.getByRole("button", { name: "Save" }).click();
  await column("in-process").locator(".card", { hasText: "Chiffrer les trois scénarios" }).waitFor({ timeout: 30000 });
  seen.editedCard = await column("in-process").locator(`.card[data-uid="${seen.boardTask}"]`).innerText();

  // An assignee added in the chat shows on the board without reloading it.
  await page.evaluate((text) => window.sendText(text), `!task assign ${seen.chatTask} ${assignee}`);
  await column("completed").locator(`.card[data-uid="${seen.chatTask}"] .who`, { hasText: assignee })
    .waitFor({ timeout: 30000 });

  // A description set in the chat too.
  await page.evaluate((text) => window.sendText(text), `!task describe ${seen.chatTask} "Relu en réunion"`);
  await column("completed").locator(`.card[data-uid="${seen.chatTask}"] .description`, { hasText: "Relu en réunion" })
    .waitFor({ timeout: 30000 });

  seen.columns = {};
  for (const progress of ["needs-action", "in-process", "completed", "cancelled"]) {
    seen.columns[progress] = await column(progress).locator(".card strong").allInnerTexts();
  }
});
