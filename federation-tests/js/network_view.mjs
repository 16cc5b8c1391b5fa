// The console's network view in a real browser while a pair of nodes is cut and a room split
// (console_network.mjs; its screenshots are docs/console's network.png and network-phone.png):
// prints the reachability matrix cell by cell, the problems listed, how many pair plots were
// drawn and which show a cut.
import { withNetworkPage } from "./console_network.mjs";

await withNetworkPage(async (page) => {
  const matrix = page.locator("table.matrix");
  return {
    matrix_head: await matrix.locator("thead th").allInnerTexts(),
    matrix_rows: await matrix
      .locator("tbody tr")
      .evaluateAll((rows) =>
        rows.map((row) => [...row.children].map((cell) => cell.innerText.replace(/\s+/g, " ").trim())),
      ),
    problems: await page.locator("ul.problems").innerText(),
    pair_plots: await page.locator("table.pairs svg.spark").count(),
    cut_minutes: await page.locator("table.pairs svg.spark rect.cut").count(),
    cut_labels: await page
      .locator("table.pairs svg.spark")
      .evaluateAll((plots) => plots.filter((p) => p.querySelector("rect.cut")).map((p) => p.getAttribute("aria-label"))),
  };
});
