#!/usr/bin/env node
// report_page.js - open tandem's GET /report in headless Chromium and check
// that it shows what the caller expects; save a screenshot.
//
//   node report_page.js EXPECT.json
//
// EXPECT.json: {"url": "http://127.0.0.1:PORT/report", "screenshot": "PATH.png",
//               "texts": ["...", ...],            // each must appear in the page
//               "fingerprint": "...",             // a mismatch block for it must exist
//               "sides": {"primary": "...", "shadow": "..."},  // in that block's sample
//               "validation": "95.83%",           // the validation card's text
//               "verify": {"state": "different", "keys": ["..."]},  // the verify section
//               "scope": "fleet",                 // click the fleet switch first, then check
//               "members": ["m1", "m2"],          // each names a sample of the fingerprint's block
//               "token": "...",                   // the admin wants one: the page must ask for
//                                                 // it, show nothing before, refuse wrong_token
//               "wrong_token": "...",             // given first: the form must come back
//               "no_markup": ["img", "script"]}   // no such element in the data sections, and
//                                                 // window.__xss never set by a payload
//
// Debian's /usr/bin/chromium, driven by playwright-core (no browser download).
// Prints one JSON line {"ok": bool, "problems": [...]}; exit 1 when not ok.
"use strict";
const fs = require("fs");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.TANDEM_CHROMIUM || "/usr/bin/chromium";

async function main() {
  const want = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const problems = [];
  const origin = new URL(want.url).origin;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // root in CI containers: Chromium's sandbox needs user namespaces it may not get
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      // the refused reads of the token flow are logged by Chromium itself
      if (want.token && /status of 40[13]/.test(m.text())) return;
      if (m.type() === "error") problems.push(`console error: ${m.text()}`);
    });
    page.on("request", (r) => {
      if (!r.url().startsWith(origin) && !r.url().startsWith("data:"))
        problems.push(`request outside the admin origin: ${r.url()}`);
    });
    const resp = await page.goto(want.url, { waitUntil: "load", timeout: 30000 });
    if (!resp || resp.status() !== 200) problems.push(`GET ${want.url}: ${resp ? resp.status() : "no answer"}`);
    if (want.token) await logIn(page, want, problems);

    // two refreshes: the data is drawn and the history chart has two points
    const ready = want.verify ? '#verify [data-testid="verify-state"]' : "#chart-validation svg";
    await page.waitForFunction((sel) => document.querySelector(sel), ready, { timeout: 30000 })
      .catch((e) => { throw new Error(`${e.message}; ${problems.join("; ")}`); });
    if (want.scope) {
      // the switch: its button, then two refreshes in that scope (the history starts again)
      await page.click(`#scope button[data-scope="${want.scope}"]`);
      await page.waitForFunction((sc) => document.body.dataset.scope === sc &&
                                   document.querySelector("#chart-validation svg"), want.scope, { timeout: 30000 })
        .catch((e) => { throw new Error(`the ${want.scope} switch: ${e.message}; ${problems.join("; ")}`); });
      const pressed = await page.getAttribute(`#scope button[data-scope="${want.scope}"]`, "aria-pressed");
      if (pressed !== "true") problems.push(`the ${want.scope} button is not pressed (${pressed})`);
    }
    const live = (await page.textContent("#live")).trim();
    if (live !== "live") problems.push(`the live indicator says ${JSON.stringify(live)}`);

    const body = await page.innerText("body");
    for (const t of want.texts || []) if (!body.includes(t)) problems.push(`text not shown: ${JSON.stringify(t)}`);

    if (want.validation) {
      const v = (await page.textContent("#validation")).trim();
      if (v !== want.validation) problems.push(`validation card shows ${JSON.stringify(v)}, want ${JSON.stringify(want.validation)}`);
    }
    if (want.fingerprint) {
      const block = page.locator(`#mismatching [data-fingerprint="${want.fingerprint}"]`);
      if ((await block.count()) !== 1) {
        problems.push(`no mismatch block for fingerprint ${want.fingerprint}`);
      } else if (want.sides) {
        const p = await block.locator(".side.primary pre").first().innerText();
        const s = await block.locator(".side.shadow pre").first().innerText();
        if (!p.includes(want.sides.primary)) problems.push(`primary side ${JSON.stringify(p)} lacks ${JSON.stringify(want.sides.primary)}`);
        if (!s.includes(want.sides.shadow)) problems.push(`shadow side ${JSON.stringify(s)} lacks ${JSON.stringify(want.sides.shadow)}`);
        const marked = await block.locator(".side.shadow pre mark").allInnerTexts();
        if (!marked.some((m) => m.includes(want.sides.shadow))) problems.push(`the differing value is not highlighted: ${JSON.stringify(marked)}`);
      }
      if (want.members && (await block.count()) === 1) {
        const seen = await block.locator('[data-testid="sample-member"]').allInnerTexts();
        for (const m of want.members) if (!seen.includes(m)) problems.push(`no sample of ${want.fingerprint} names member ${m}: ${JSON.stringify(seen)}`);
      }
    }
    if (want.verify) {
      const state = (await page.textContent('#verify [data-testid="verify-state"]') || "").trim();
      if (state !== want.verify.state) problems.push(`verify state shows ${JSON.stringify(state)}, want ${JSON.stringify(want.verify.state)}`);
      const diffs = await page.locator('#verify [data-testid="verify-differences"]').innerText().catch(() => "");
      for (const k of want.verify.keys || []) if (!diffs.includes(k)) problems.push(`verify difference not shown as text: ${JSON.stringify(k)}`);
      // values come from the database: rendered as text, never as markup
      const injected = await page.locator("#verify img, #verify script, #verify iframe").count();
      if (injected) problems.push(`${injected} element(s) injected into the verify section`);
    }
    if (want.no_markup) {
      const sel = want.no_markup.map((t) => `#report ${t}`).join(", ");
      const injected = await page.locator(sel).count();
      if (injected) problems.push(`${injected} element(s) (${sel}) injected into the report`);
      const xss = await page.evaluate(() => window.__xss || null);
      if (xss) problems.push(`a payload ran: ${JSON.stringify(xss)}`);
    }
    if (want.token) {
      const kept = await page.evaluate(() => sessionStorage.getItem("tandem.adminToken"));
      if (kept !== want.token) problems.push(`sessionStorage holds ${JSON.stringify(kept)}, not the token`);
    }
    await page.screenshot({ path: want.screenshot, fullPage: true });
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify({ ok: problems.length === 0, problems }));
  process.exit(problems.length === 0 ? 0 : 1);
}

/*
 * logIn - the page asks for the token before it shows anything; a wrong
 * token brings the form back with a reason; the right one is accepted.
 */
async function logIn(page, want, problems) {
  const form = '[data-testid="login"]';
  await page.waitForSelector(form, { state: "visible", timeout: 30000 })
    .catch((e) => { throw new Error(`no token form: ${e.message}; ${problems.join("; ")}`); });
  if (await page.isVisible("#report")) problems.push("the report is shown before a token is given");
  if (want.wrong_token) {
    await page.fill('[data-testid="login-token"]', want.wrong_token);
    await page.click('[data-testid="login-submit"]');
    await page.waitForFunction(() => /refused/.test(document.querySelector('[data-testid="login-why"]').textContent) &&
                                 !document.querySelector('[data-testid="login"]').hidden, null, { timeout: 30000 })
      .catch((e) => { throw new Error(`a wrong token did not bring the form back: ${e.message}`); });
  }
  await page.fill('[data-testid="login-token"]', want.token);
  await page.click('[data-testid="login-submit"]');
  await page.waitForSelector(form, { state: "hidden", timeout: 30000 })
    .catch((e) => { throw new Error(`the token was not accepted: ${e.message}; ${problems.join("; ")}`); });
}

main().catch((e) => {
  console.log(JSON.stringify({ ok: false, problems: [String(e && e.stack || e)] }));
  process.exit(1);
});
