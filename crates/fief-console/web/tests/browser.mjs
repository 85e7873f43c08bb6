// The consoles in headless Chromium (Debian's `chromium`, driven by
// playwright-core): the operator signs in, creates a tenant, sees its usage
// chart after traffic (as many points as the traffic's minutes), changes its
// tier and reads the audit view; a tenant sees its own data only, whatever
// URL or request the page is made to send. Canaries of two tenants
// (prompts, document text, item values) must never appear in the operator
// console, nor one tenant's in the other's. verify-isolation runs from the
// operator console and passes. A screenshot of every page goes to
// FIEF_SCREENSHOTS (default target/console-screenshots).
//
//   node tests/browser.mjs [path/to/fief]
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "../../../..");
const fief = resolve(process.argv[2] ?? join(root, "target/debug/fief"));
const mockBin = join(dirname(fief), "fief-llm-mock");
const shots = resolve(process.env.FIEF_SCREENSHOTS ?? join(root, "target/console-screenshots"));
const browserPath = process.env.FIEF_CHROMIUM ?? "/usr/bin/chromium";
mkdirSync(shots, { recursive: true });

let failures = 0;
function check(ok, what) {
  if (ok) console.log(`ok   ${what}`);
  else {
    failures++;
    console.log(`FAIL ${what}`);
  }
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

async function until(what, f, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch {}
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

const children = [];
function cleanup() {
  for (const c of children) c.kill("SIGTERM");
}
process.on("exit", cleanup);

// ---- a gateway with a foundation-model upstream -------------------------------
const work = mkdtempSync(join(tmpdir(), "fief-console-"));
const mock = spawn(mockBin, ["--port", "0", "--model", "mock-small"], { stdio: ["ignore", "pipe", "inherit"] });
children.push(mock);
const upstream = await new Promise((res, rej) => {
  mock.stdout.once("data", (d) => res(String(d).trim().split("\n")[0]));
  mock.once("exit", (c) => rej(new Error(`fief-llm-mock exited ${c}`)));
});
writeFileSync(
  join(work, "fief.toml"),
  `[[llm.upstreams]]\nname = "local"\nurl = "${upstream}"\nmodels = [{ id = "mock-small", alias = "chat-small" }]\n`,
);
const [dataPort, adminPort] = [await freePort(), await freePort()];
const token = `console-test-${Math.random().toString(16).slice(2)}${Date.now()}`;
const server = spawn(
  fief,
  ["serve", "--listen", `127.0.0.1:${dataPort}`, "--admin-listen", `127.0.0.1:${adminPort}`, "--data-dir", join(work, "data"), "--config", join(work, "fief.toml")],
  { env: { ...process.env, FIEF_ADMIN_TOKEN: token }, stdio: ["ignore", "ignore", "pipe"] },
);
children.push(server);
let serverLog = "";
server.stderr.on("data", (d) => (serverLog += d));
const data = `http://127.0.0.1:${dataPort}`;
const admin = `http://127.0.0.1:${adminPort}`;
await until("the gateway", async () => (await fetch(`${admin}/healthz`)).ok && (await fetch(`${data}/healthz`)).ok);

async function api(base, cred, method, path, body, type = "application/json") {
  const headers = { Authorization: `Bearer ${cred}` };
  if (body !== undefined) headers["Content-Type"] = type;
  const r = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : type === "application/json" ? JSON.stringify(body) : body });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// ---- the browser ----------------------------------------------------------------
const browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
const problems = [];
async function newPage() {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return page;
}
async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}
async function signIn(page, url, cred) {
  await page.goto(url);
  await page.fill("#credential", cred);
  await page.click("form.signin button[type=submit]");
  await page.waitForSelector("nav");
}
async function visit(page, hash, selector) {
  // The same hash again fires no hashchange: the view is asked to render anew.
  await page.evaluate((h) => {
    if (location.hash === h) window.dispatchEvent(new HashChangeEvent("hashchange"));
    else location.hash = h;
  }, hash);
  await page.waitForSelector(selector);
  await page.waitForFunction(() => !document.querySelector("#view")?.textContent?.startsWith("loading"));
}
const rendered = (page) => page.evaluate(() => document.documentElement.outerHTML + "\n" + document.body.innerText);

// Operator: sign in, create a tenant through the form.
const op = await newPage();
await signIn(op, `${admin}/console/`, token);
check((await op.textContent("[data-testid=who]")).includes("operator"), "the operator signs in with the admin token");
check(!(await op.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie + location.href)).includes(token), "the admin token is in no storage, cookie or URL");
await op.fill("[data-testid=create-tenant] input[name=id]", "acme");
await op.selectOption("[data-testid=create-tenant] select[name=tier]", "pool");
await op.fill("[data-testid=create-tenant] input[name=tags]", "CostCenter=cc-7");
await op.click("[data-testid=create-tenant] button[type=submit]");
await op.waitForSelector("[data-testid=new-key] code");
const acmeKey = (await op.textContent("[data-testid=new-key] code")).trim();
check(acmeKey.startsWith("fief_"), "creating a tenant shows its first key once");
const globexKey = (await api(admin, token, "POST", "/admin/v1/tenants", { id: "globex", tier: "pool" })).api_key;

// Each tenant's canaries: a prompt, a document's text, an item's value.
const canary = (t) => ({ prompt: `prompt-canary-${t}-${Date.now()}`, doc: `doccanary${t}${Date.now()}`, item: `item-canary-${t}-${Date.now()}` });
const canaries = { acme: canary("acme"), globex: canary("globex") };
const model = join(work, "m.onnx");
execFileSync(fief, ["model", "sample", model, "--seed", "3"]);
const invocations = 7;
for (const [t, key] of [["acme", acmeKey], ["globex", globexKey]]) {
  const c = canaries[t];
  await api(data, key, "PUT", "/api/v1/models/m", readFileSync(model), "application/octet-stream");
  const n = t === "acme" ? invocations : 2;
  for (let i = 0; i < n; i++) {
    const r = await fetch(`${data}/endpoints/shared/invocations`, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "m" },
      body: JSON.stringify({ inputs: [[0.5, -1.0, 2.0, i]] }),
    });
    if (!r.ok) throw new Error(`invoke: ${r.status} ${await r.text()}`);
  }
  await api(data, key, "POST", "/v1/chat/completions", { model: "chat-small", messages: [{ role: "user", content: c.prompt }] });
  await api(data, key, "PUT", "/api/v1/tables/notes/items/secret", { value: c.item });
  await api(data, key, "POST", "/api/v1/knowledge-bases", { name: "kb" });
  await api(data, key, "PUT", "/api/v1/knowledge-bases/kb/documents/d1", { text: `The quarterly plan mentions ${c.doc} in its summary.` });
}
const allCanaries = [...Object.values(canaries.acme), ...Object.values(canaries.globex)];

// The operator's view of acme: its charts after the traffic.
const from = new Date(Date.now() - 6 * 3600 * 1000).toISOString().replace(/\.\d+Z$/, "Z");
const usage = await api(admin, token, "GET", `/admin/v1/usage?tenant=acme&group_by=minute&from=${from}`);
const minutes = new Set(usage.rows.map((r) => r.minute));
const onnx = usage.rows.filter((r) => r.kind === "onnx").reduce((a, r) => a + r.requests, 0);
check(onnx === invocations, `the usage API counts acme's ${invocations} invocations (${onnx})`);
await visit(op, "#tenant/acme", "[data-testid=chart-requests]");
const points = Number(await op.getAttribute("[data-testid=chart-requests]", "data-points"));
check(points === minutes.size && points > 0, `the requests chart has one point per minute of traffic (${points} of ${minutes.size})`);
check((await op.locator("[data-testid=chart-requests] canvas").count()) > 0, "the requests chart is drawn");
const charted = await op.$$eval("[data-testid=chart-requests] table.points tbody tr td:nth-child(2)", (tds) => tds.reduce((a, td) => a + Number(td.textContent), 0));
const billed = usage.rows.reduce((a, r) => a + r.requests, 0);
check(charted === billed, `the chart's points add up to the billed requests (${charted} = ${billed})`);
const latency = await op.$$eval("[data-testid=chart-latency] table.points tbody tr td:nth-child(2)", (tds) => tds.map((td) => Number(td.textContent)));
check(latency.length === minutes.size && latency.every((ms) => ms > 0), `the latency chart has a mean above 0 ms for every minute of traffic (${latency})`);
await shot(op, "operator-tenant");

// Tier change from the page.
await op.selectOption("[data-testid=tier]", "silo");
await op.click("[data-testid=change-tier]");
await until("the tier change", async () => (await op.textContent("[data-testid=current-tier]")) === "silo");
check((await api(admin, token, "GET", "/admin/v1/tenants/acme")).tenant.tier === "silo", "the tier change reached the API");
await shot(op, "operator-tenant-silo");

// The audit view with its chain status, filtered to acme.
await visit(op, "#audit?tenant=acme", "[data-testid=audit]");
check((await op.textContent("[data-testid=chain-status]")).includes("chain verified"), "the audit view shows the chain verified");
const auditRows = await op.locator("[data-testid=audit] tbody tr").count();
check(auditRows > 0, `the audit view lists acme's entries (${auditRows})`);
const tenantsCol = await op.$$eval("[data-testid=audit] tbody tr td:nth-child(4)", (tds) => tds.map((t) => t.textContent));
check(tenantsCol.every((t) => t === "acme"), "the tenant filter holds");
await shot(op, "operator-audit");

// verify-isolation from the console: run, watched until it ends, reported.
await visit(op, "#isolation", "[data-testid=isolation]");
await op.click("[data-testid=run-isolation]");
const verdict = await until(
  "the verify-isolation run",
  async () => (await op.locator("[data-testid=isolation-status]").count()) && (await op.textContent("[data-testid=isolation-status]")),
  600000,
);
check(verdict.startsWith("PASSED") && verdict.includes(" 0 LEAK, 0 ALLOWED, 0 UNEXPECTED"), `the console runs verify-isolation and shows it passed (${verdict})`);
const last = (await api(admin, token, "GET", "/admin/v1/verify-isolation")).run;
check(last.status === "passed" && last.attempts > 500 && verdict.includes(`${last.attempts} attempts`), `the console shows the API's last report (${last.attempts} attempts)`);
check((await op.locator("[data-testid=isolation-failures]").textContent()) === "none", "no attempt of the run was let through");
await shot(op, "operator-isolation");

// Every operator page: no tenant content.
for (const [hash, sel, name] of [
  ["#tenants", "[data-testid=tenants]", "operator-tenants"],
  ["#tenant/acme", "[data-testid=tenant]", null],
  ["#tenant/globex", "[data-testid=tenant]", null],
  ["#cache", "[data-testid=cache]", "operator-cache"],
  ["#audit", "[data-testid=audit]", null],
  ["#isolation", "[data-testid=isolation-status]", null],
]) {
  await visit(op, hash, sel);
  if (name) await shot(op, name);
  const html = await rendered(op);
  const seen = allCanaries.filter((c) => html.includes(c));
  check(seen.length === 0, `operator ${hash} shows no prompt, document text or item value${seen.length ? `: ${seen}` : ""}`);
}

// ---- the tenant console ----------------------------------------------------------
const tp = await newPage();
const responses = [];
tp.on("response", async (r) => {
  try {
    responses.push(`${r.url()} ${await r.text()}`);
  } catch {}
});
await signIn(tp, `${data}/console/`, acmeKey);
check((await tp.textContent("[data-testid=who]")).startsWith("acme"), "acme signs in to the tenant console with its key");
await visit(tp, "#usage", "[data-testid=chart-requests]");
const ownPoints = Number(await tp.getAttribute("[data-testid=chart-requests]", "data-points"));
check(ownPoints === minutes.size, `acme's own usage chart has its minutes (${ownPoints})`);
await shot(tp, "tenant-usage");
await visit(tp, "#models", "[data-testid=models]");
await shot(tp, "tenant-models");
await visit(tp, "#kb/kb", "[data-testid=documents]");
await tp.fill("[data-testid=kb-search]", "quarterly plan summary");
await tp.press("[data-testid=kb-search]", "Enter");
await tp.waitForSelector("[data-testid=kb-hits]");
check((await tp.textContent("[data-testid=kb-hits]")).includes(canaries.acme.doc), "the search box finds acme's own document");
await shot(tp, "tenant-knowledge");
await visit(tp, "#logs", "[data-testid=logs]");
check((await tp.textContent("[data-testid=logs]")).includes(canaries.acme.prompt), "acme's private log shows its own prompt");
await shot(tp, "tenant-logs");
await visit(tp, "#policies", "main section");
await tp.fill("input[aria-label=resource]", "frn:fief:model:globex/m");
await tp.click("button:has-text('Explain')");
await tp.waitForSelector("[data-testid=explain] *");
await shot(tp, "tenant-policies");
await visit(tp, "#roles", "[data-testid=quotas], main section p");
await shot(tp, "tenant-roles");

// Editing the URL: other tenants' resources by every spelling.
for (const hash of ["#kb/frn:fief:knowledge-base:globex%2Fkb", "#kb/globex%2Fkb", "#kb/..%2Fglobex%2Fkb", "#kb/kb?tenant=globex"]) {
  await visit(tp, hash, "main section");
  await new Promise((r) => setTimeout(r, 200));
}
// Editing the requests the page sends: another tenant named in the path,
// the query and the body.
await tp.route("**/api/v1/**", (route) => {
  const req = route.request();
  const url = new URL(req.url());
  url.searchParams.set("tenant", "globex");
  url.pathname = url.pathname.replace("/knowledge-bases/kb", "/knowledge-bases/frn:fief:knowledge-base:globex%2Fkb").replace("/models", "/models/frn:fief:model:globex%2Fm");
  let body = req.postData();
  if (body) {
    try {
      body = JSON.stringify({ ...JSON.parse(body), tenant: "globex" });
    } catch {}
  }
  route.continue({ url: url.toString(), postData: body ?? undefined });
});
for (const hash of ["#usage", "#models", "#kb/kb", "#logs", "#policies", "#roles"]) {
  await visit(tp, hash, "main section, main p");
  await new Promise((r) => setTimeout(r, 200));
}
await tp.unroute("**/api/v1/**");
await visit(tp, "#kb/kb", "[data-testid=documents], main p");
const seenByAcme = [...Object.values(canaries.globex)].filter((c) => responses.some((r) => r.includes(c)) || false);
check(seenByAcme.length === 0, `no response to acme's console held globex's data${seenByAcme.length ? `: ${seenByAcme}` : ""}`);
const acmeHtml = await rendered(tp);
check(!Object.values(canaries.globex).some((c) => acmeHtml.includes(c)), "acme's console never rendered globex's data");
check(!(await tp.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie + location.href)).includes(acmeKey), "the key is in no storage, cookie or URL");

// The console's headers keep it from being framed or loading foreign code.
const page = await fetch(`${data}/console/`);
check((page.headers.get("content-security-policy") ?? "").includes("frame-ancestors 'none'") && page.headers.get("x-frame-options") === "DENY", "the console may not be framed and loads only its own files");
check(problems.length === 0, `no script errors or CSP violations${problems.length ? `: ${problems.join("; ")}` : ""}`);

await browser.close();
cleanup();
rmSync(work, { recursive: true, force: true });
console.log(`screenshots in ${shots}`);
if (failures) {
  console.log(`${failures} browser check(s) failed; the server's log:\n${serverLog.slice(-4000)}`);
  process.exit(1);
}
console.log("console browser test: ok");
