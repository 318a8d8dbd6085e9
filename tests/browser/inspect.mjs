// Open a page in headless Chromium (Debian's, driven by playwright-core),
// run steps on it, and print what the test asked for as JSON:
//
//   node inspect.mjs URL SCREENSHOT.png STEPS.json
//
// STEPS: [{"fill": "#sel", "value": "x"}, {"click": "#sel"}, {"wait": 500},
//         {"waitFor": "js expression"}, {"eval": "js expression", "as": "name"}]
// Every request the page makes besides URL itself is listed in `requests`.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.SLUICE_BROWSER_TOOLS + "/");
const { chromium } = require("playwright-core");

const [url, screenshot, stepsFile] = process.argv.slice(2);
const steps = JSON.parse(readFileSync(stepsFile, "utf8"));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const out = { requests: [], errors: [], results: {} };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("request", (r) => { if (r.url() !== url) out.requests.push(r.url()); });
  page.on("pageerror", (e) => out.errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") out.errors.push(m.text()); });
  await page.goto(url, { waitUntil: "load" });
  for (const s of steps) {
    if (s.fill) await page.fill(s.fill, s.value);
    else if (s.click) await page.click(s.click);
    else if (s.wait) await page.waitForTimeout(s.wait);
    else if (s.waitFor) {
      // Polled with evaluate: the pages' Content-Security-Policy forbids
      // the in-page eval that waitForFunction would use.
      const until = Date.now() + 15000;
      while (!(await page.evaluate(s.waitFor))) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${s.waitFor}`);
        await page.waitForTimeout(100);
      }
    }
    else if (s.eval) out.results[s.as] = await page.evaluate(s.eval);
  }
  await page.screenshot({ path: screenshot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
