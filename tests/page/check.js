// Opens Rill's live page in a real headless Chromium (Debian's, driven by playwright-core) and
// prints what it showed as one JSON line. Used by tests/page.rs.
//   node check.js URL SCREENSHOT.png [USER PASSWORD]
// PLAYWRIGHT_CORE names the playwright-core package folder (scripts/setup.sh installs it).
"use strict";
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

async function main() {
  const [url, shot, user, password] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const context = await browser.newContext(user ? { httpCredentials: { username: user, password } } : {});
    const page = await context.newPage();
    const paths = new Set();
    const errors = [];
    page.on("request", (r) => paths.add(new URL(r.url()).origin === new URL(url).origin ? new URL(r.url()).pathname : r.url()));
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    let response;
    try {
      response = await page.goto(url);
    } catch (e) {
      // A basic-authentication challenge that a headless browser cannot answer.
      if (String(e.message).includes("ERR_INVALID_AUTH_CREDENTIALS")) {
        console.log(JSON.stringify({ status: 401 }));
        return;
      }
      throw e;
    }
    if (response.status() !== 200) {
      console.log(JSON.stringify({ status: response.status() }));
      return;
    }
    await page.waitForSelector('#graph g.component[data-name="out"]', { timeout: 60000 });
    const cell = () => page.$eval('#components tr[data-name="g"] td:nth-child(4)', (td) => td.textContent);
    const first = await cell();
    const seen = Number(await page.evaluate(() => document.body.dataset.updates));
    // It updates by itself: two more refreshes, and the source's count moved.
    await page.waitForFunction((n) => Number(document.body.dataset.updates) >= n + 2, seen, { timeout: 60000 });
    await page.waitForFunction((f) => document.querySelector('#components tr[data-name="g"] td:nth-child(4)').textContent !== f, first, { timeout: 60000 });
    const out = {
      status: response.status(),
      title: await page.title(),
      state: await page.textContent("#state"),
      components: await page.$$eval("#graph g.component", (gs) => gs.map((g) => [g.dataset.name, g.getAttribute("class")])),
      edges: await page.$$eval("#graph path.edge", (ps) => ps.length),
      first,
      later: await cell(),
      checkpoints: await page.$$eval("#timeline g.checkpoint", (gs) => gs.length),
      dead_letters: await page.$$eval("#dead tr.dead-letter td:nth-child(2)", (tds) => tds.map((t) => t.textContent)),
      errors,
      paths: [...paths],
    };
    await page.screenshot({ path: shot, fullPage: true });
    console.log(JSON.stringify(out));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
