// The console's network view in a real browser (console_network.mjs): prints the matrix's
// text, the problems listed and how many plots were drawn.
import { withNetworkPage } from "./console_network.mjs";

await withNetworkPage(async (page) => ({
  matrix: await page.locator("table.matrix").innerText(),
  problems: await page.locator("ul.problems").innerText(),
  svgs: await page.locator("figure.plot svg").count(),
}));
