// The dashboard in a real browser: Debian's chromium driven by playwright-core, against a real
// gateway on which tests/dashboard.rs has made real payments. Run by that test with:
//   DASH_URL        the dashboard (http://admin-listener/dashboard/)
//   TENANT, TENANT_KEY, ADMIN_TOKEN, EXPECT_PAYMENTS (settled payments made before)
//   GATEWAY_URL, UPSTREAM_URL, PAYER_KEY, PAY_SCRIPT (to pay a route made in the dashboard)
//   SCREENSHOT_DIR  where each page's screenshot goes
//   CHROMIUM        the browser (default /usr/bin/chromium)
// Prints one JSON line {"ok": true, "checks": [...], "routes": "available"|"unavailable"} and
// exits 0, or prints the failure and exits 1.
import { chromium } from "playwright-core";
import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import { promisify } from "node:util";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const DASH = env("DASH_URL");
const ORIGIN = new URL(DASH).origin;
const TENANT = env("TENANT");
const EXPECT = Number(env("EXPECT_PAYMENTS"));
const SHOTS = env("SCREENSHOT_DIR");
mkdirSync(SHOTS, { recursive: true });

const checks = [];
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  checks.push(what);
}
const shot = (page, name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });

async function signIn(page, token) {
  await page.goto(DASH);
  await page.fill("#token", token);
  await page.click("#sign-in");
  await page.waitForSelector("#sign-out");
}

async function signOut(page) {
  await page.click("#sign-out");
  await page.waitForSelector("#sign-in");
}

async function tenantFlow(page, context) {
  // Sign-in refused with a wrong key, then accepted with the tenant's.
  await page.goto(DASH);
  await page.waitForSelector("#sign-in");
  await shot(page, "01-sign-in");
  await page.fill("#token", "x402_live_not-a-real-key-at-all-0000000000");
  await page.click("#sign-in");
  await page.waitForSelector(".login .error");
  check(true, "a wrong key is refused at sign-in");
  await signIn(page, env("TENANT_KEY"));
  check((await page.textContent("#who")).includes(TENANT), "signed in as the tenant");

  // The session cookie: HttpOnly (script cannot read it), SameSite=Strict.
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "x402_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "session cookie is HttpOnly and SameSite=Strict");
  check(!(await page.evaluate(() => document.cookie)).includes("x402_session"), "the page's script cannot see the session cookie");

  // Usage: the payments made before are in the count, the chart and revenue.
  await page.waitForSelector(`#daily-chart[data-payments="${EXPECT}"] canvas[data-chart-ready="1"]`);
  check(true, `the daily chart shows ${EXPECT} payments`);
  check((await page.textContent("#verified")).trim() === String(EXPECT), "verified payments this month");
  const revenue = await page.textContent("#revenue");
  check(revenue.includes("/paid/*") && revenue.includes(`${(EXPECT * 0.01).toFixed(2)} USDC`), "revenue by route and asset");
  await shot(page, "02-usage");

  // Payments: each listed and linked to its transaction on the network's explorer.
  await page.click("#nav-payments");
  await page.waitForSelector("#payments tbody tr[data-payment-id]");
  const rows = await page.$$eval("#payments tbody tr[data-payment-id]", (trs) =>
    trs.map((tr) => ({ status: tr.querySelector(".status")?.textContent, href: tr.querySelector("a.tx")?.getAttribute("href") })),
  );
  const settled = rows.filter((r) => r.status === "settled");
  check(settled.length === EXPECT, `the ${EXPECT} settled payments are listed`);
  check(settled.every((r) => /^https:\/\/sepolia\.basescan\.org\/tx\/0x[0-9a-f]{64}$/.test(r.href)), "each links to its transaction");
  await shot(page, "03-payments");
  await page.selectOption("#filter-status", "failed");
  await page.waitForSelector("#payments td.empty");
  check(true, "the status filter narrows the list");
  await page.selectOption("#filter-status", "");
  await page.waitForSelector("#payments tbody tr[data-payment-id]");

  // Keys: create (shown once), then revoke; the revoked key is refused by the API.
  await page.click("#nav-keys");
  await page.waitForSelector("#keys tbody tr");
  const before = await page.$$eval("#keys tbody tr", (t) => t.length);
  await page.click("#create-key");
  await page.waitForSelector("#new-key-value");
  const secret = await page.inputValue("#new-key-value");
  check(secret.startsWith("x402_live_"), "a new key is shown once");
  const keyId = await page.textContent("#new-key code");
  await page.waitForFunction((n) => document.querySelectorAll("#keys tbody tr").length === n + 1, before);
  let r = await fetch(`${ORIGIN}/api/v1/x402/usage`, { headers: { authorization: `Bearer ${secret}` } });
  check(r.status === 200, "the new key works");
  await shot(page, "04-keys-created");
  await page.click(`#keys tr[data-key-id="${keyId}"] button.revoke`);
  await page.click(`#keys tr[data-key-id="${keyId}"] button.confirm-revoke`);
  await page.waitForSelector(`#keys tr[data-key-id="${keyId}"][data-state="revoked"]`);
  r = await fetch(`${ORIGIN}/api/v1/x402/usage`, { headers: { authorization: `Bearer ${secret}` } });
  check(r.status === 401, "the revoked key is refused");
  await page.click("#new-key button.link");
  await shot(page, "05-keys");

  // Routes.
  await page.click("#nav-routes");
  await page.waitForSelector("#routes-unavailable, #new-route");
  let routes = "available";
  if (await page.$("#routes-unavailable")) {
    routes = "unavailable";
    check(true, "the routes page says routes through the API are not available");
    await shot(page, "06-routes");
  } else {
    await routesFlow(page);
  }

  // Sign out: the session ends on the server, so the old cookie is refused too.
  const cookie = `x402_session=${session.value}`;
  await signOut(page);
  await page.reload();
  await page.waitForSelector("#sign-in");
  r = await fetch(`${ORIGIN}/api/v1/x402/usage`, { headers: { cookie } });
  check(r.status === 401, "after sign-out the old session cookie is refused");
  return routes;
}

async function routesFlow(page) {
  const form = "#new-route";
  // A validation error, shown by its field.
  await page.fill(`${form} [name=path]`, "/dash/*");
  await page.fill(`${form} [name=upstream]`, env("UPSTREAM_URL"));
  await page.fill(`${form} [name=price]`, "ten dollars");
  await page.click("#create-route");
  await page.waitForSelector('[data-field-error="price"]');
  check(true, "a bad price is shown as an error on its field");
  await shot(page, "06-routes-error");
  // A valid route.
  await page.fill(`${form} [name=price]`, "$0.01");
  await page.click("#create-route");
  await page.waitForSelector('#routes tr[data-path="/dash/*"]');
  check(true, "a route is created");
  await shot(page, "07-routes");
  // Paid through the gateway by the reference client (applied live within seconds).
  const run = promisify(execFile);
  let paid = null;
  for (let i = 0; i < 20 && !paid; i++) {
    const { stdout } = await run("node", [env("PAY_SCRIPT"), `${env("GATEWAY_URL")}/dash/report`, env("PAYER_KEY")]);
    const out = JSON.parse(stdout);
    if (out.receipt?.success) paid = out;
    else await new Promise((res) => setTimeout(res, 500));
  }
  check(paid, "the new route is paid through the gateway");
  await page.click("#nav-payments");
  await page.waitForFunction(() => [...document.querySelectorAll("#payments td")].some((td) => td.textContent === "/dash/*"));
  check(true, "its payment is listed");
  // Edit its price, then delete it.
  await page.click("#nav-routes");
  const row = '#routes tr[data-path="/dash/*"]';
  await page.click(`${row} button.edit-route`);
  await page.fill(`${row} .edit-price`, "$0.02");
  await page.click(`${row} button.save-route`);
  await page.waitForFunction((sel) => document.querySelector(`${sel} .price`)?.textContent === "$0.02", row);
  check(true, "its price is changed");
  await page.click(`${row} button.delete-route`);
  await page.click(`${row} button.confirm-delete`);
  await page.waitForSelector(row, { state: "detached" });
  check(true, "it is deleted");
}

async function operatorFlow(page) {
  await signIn(page, env("ADMIN_TOKEN"));
  check((await page.textContent("#who")).includes("operator"), "signed in as the operator");
  await page.click("#nav-tenants");
  const row = `#tenants tr[data-tenant="${TENANT}"]`;
  await page.waitForSelector(row);
  // Suspend, then activate; the API agrees each time.
  const status = async () =>
    (await (await fetch(`${ORIGIN}/api/v1/x402/admin/tenants/${TENANT}`, { headers: { "x-admin-key": env("ADMIN_TOKEN") } })).json());
  await page.click(`${row} button.suspend`);
  await page.waitForSelector(`${row}[data-status="suspended"]`);
  check((await status()).status === "suspended", "a tenant is suspended");
  await shot(page, "08-tenants-suspended");
  await page.click(`${row} button.activate`);
  await page.waitForSelector(`${row}[data-status="active"]`);
  check((await status()).status === "active", "and activated again");
  // A plan change.
  const tier = (await status()).tier;
  const other = tier === "pro" ? "starter" : "pro";
  await page.selectOption(`${row} select.tier`, other);
  await page.waitForFunction(
    ([t, want]) => document.querySelector(`#tenants tr[data-tenant="${t}"] select.tier`)?.value === want,
    [TENANT, other],
  );
  for (let i = 0; i < 50 && (await status()).tier !== other; i++) await new Promise((r) => setTimeout(r, 100));
  check((await status()).tier === other, "a plan is changed");
  await page.selectOption(`${row} select.tier`, tier);
  for (let i = 0; i < 50 && (await status()).tier !== tier; i++) await new Promise((r) => setTimeout(r, 100));
  await shot(page, "09-tenants");
  // The operator's view of the tenant's usage.
  await page.click("#nav-usage");
  await page.selectOption("#tenant-picker", TENANT);
  await page.waitForSelector(`#daily-chart[data-payments]`);
  check(Number(await page.getAttribute("#daily-chart", "data-payments")) >= EXPECT, "the operator sees the tenant's usage");
  await shot(page, "10-operator-usage");
  await signOut(page);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
let code = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  // Script errors and CSP violations (console errors other than failed loads, which the
  // responses below account for), and answers >= 400 that no step of the flow asked for.
  const consoleErrors = [];
  const failed = [];
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("response", (r) => {
    if (r.status() < 400) return;
    const path = new URL(r.url()).pathname;
    const expected =
      (r.status() === 401 && ["/dashboard/api/login", "/dashboard/api/session"].includes(path)) ||
      (r.status() === 404 && path === "/api/v1/x402/routes") || // no routes API in this build
      (r.status() === 400 && path === "/api/v1/x402/routes"); // the validation error shown
    if (!expected) failed.push(`${r.status()} ${r.request().method()} ${path}`);
  });
  const routes = await tenantFlow(page, context);
  await operatorFlow(page);
  check(consoleErrors.length === 0, `no script errors or CSP violations (${consoleErrors.join(" | ")})`);
  check(failed.length === 0, `no unexpected error answers (${failed.join(" | ")})`);
  console.log(JSON.stringify({ ok: true, routes, checks }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e?.stack ?? e), checks }));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
