// The operator console (admin listener): tenants and their keys, quotas and
// tier; per-tenant charts; the model cache; the audit log and its chain;
// verify-isolation, run and reported. It calls only the admin API, which
// shows counts, money and metadata, never a tenant's content.
import { button, call, CHARTED, chart, h, latencyChart, message, perMinute, problem, lastSixHours, start, table, type Reply } from "./common";

const TIERS = ["pool", "bridge", "silo"];

function pairs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [k, ...v] = part.split("=");
    out[k.trim()] = v.join("=").trim();
  }
  return out;
}

function shownOnce(r: Reply): HTMLElement {
  const j = r.json;
  return h(
    "div",
    { class: "secret", "data-testid": "new-key" },
    h("p", {}, "The new key, shown once: hand it to the tenant now."),
    h("code", {}, j.api_key),
    h("p", {}, "For AWS SDKs (SigV4): ", h("code", {}, `aws_access_key_id=${j.aws_access_key_id}`), " ", h("code", {}, "aws_secret_access_key=<the part after the second underscore>")),
  );
}

async function tenants(): Promise<HTMLElement> {
  const r = await call("GET", "/admin/v1/tenants");
  if (!r.ok) return message(problem(r), "error");
  const id = h("input", { name: "id", placeholder: "tenant id", required: "" }) as HTMLInputElement;
  const tier = h("select", { name: "tier" }, ...TIERS.map((t) => h("option", { value: t }, t))) as HTMLSelectElement;
  const tags = h("input", { name: "tags", placeholder: "CostCenter=cc-1, Team=ml" }) as HTMLInputElement;
  const note = h("div", {});
  const form = h("form", { class: "inline", "data-testid": "create-tenant" }, id, tier, tags, h("button", { type: "submit" }, "Create tenant"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const made = await call("POST", "/admin/v1/tenants", { id: id.value.trim(), tier: tier.value, tags: pairs(tags.value) });
    if (!made.ok) {
      note.replaceChildren(message(problem(made), "error"));
      return;
    }
    location.hash = `#tenant/${encodeURIComponent(made.json.tenant.id)}`;
    // The key is shown on the tenant's page, once.
    sessionKey = made;
  });
  const rows = r.json.tenants.map((t: any) => ({ id: t.id, tier: t.tier, status: t.status, tags: t.tags, created_at: t.created_at }));
  return h("section", {}, h("h2", {}, "Tenants"), form, note, table(rows, ["id", "tier", "status", "tags", "created_at"], "tenants", (t) => `#tenant/${encodeURIComponent(t.id)}`));
}

// A just-created tenant's first key, shown on its page once, then dropped.
let sessionKey: Reply | null = null;

async function tenant(id: string): Promise<HTMLElement> {
  if (!id) return tenants();
  const path = `/admin/v1/tenants/${encodeURIComponent(id)}`;
  const r = await call("GET", path);
  if (!r.ok) return message(problem(r), "error");
  const t = r.json.tenant;
  const section = h("section", { "data-testid": "tenant" }, h("h2", {}, `Tenant ${t.id}`));
  if (sessionKey && sessionKey.json.tenant?.id === t.id) section.append(shownOnce(sessionKey));
  sessionKey = null;
  const note = h("div", {});
  const patch = async (body: unknown) => {
    const p = await call("PATCH", path, body);
    if (p.ok) void refresh();
    else note.replaceChildren(message(problem(p), "error"));
  };
  const refresh = async () => {
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  };

  const tier = h("select", { "data-testid": "tier" }, ...TIERS.map((x) => h("option", x === t.tier ? { value: x, selected: "" } : { value: x }, x))) as HTMLSelectElement;
  const tags = h("input", { value: Object.entries(t.tags ?? {}).map(([k, v]) => `${k}=${v}`).join(", ") }) as HTMLInputElement;
  const quotas = h("input", { value: JSON.stringify(t.quotas ?? {}), "aria-label": "quotas (JSON)" }) as HTMLInputElement;
  section.append(
    h("dl", {}, h("dt", {}, "tier"), h("dd", { "data-testid": "current-tier" }, t.tier), h("dt", {}, "status"), h("dd", {}, t.status), h("dt", {}, "incarnation"), h("dd", {}, t.incarnation), h("dt", {}, "effective quotas"), h("dd", {}, JSON.stringify(r.json.effective_quotas ?? {}))),
    h("div", { class: "inline" }, h("label", {}, "Tier "), tier, button("Change tier", () => patch({ tier: tier.value }), { "data-testid": "change-tier" })),
    h("div", { class: "inline" }, h("label", {}, "Tags "), tags, button("Set tags", () => patch({ tags: pairs(tags.value) }))),
    h("div", { class: "inline" }, h("label", {}, "Quotas "), quotas, button("Set quotas", async () => {
      let q: unknown;
      try {
        q = JSON.parse(quotas.value || "null");
      } catch {
        note.replaceChildren(message("quotas must be JSON, e.g. {\"requests_per_minute\": 600}", "error"));
        return;
      }
      await patch({ quotas: q });
    })),
    note,
  );

  // Usage, errors and compute per minute over the last six hours.
  const span = lastSixHours();
  const from = span.from;
  const usage = await call("GET", `/admin/v1/usage?tenant=${encodeURIComponent(t.id)}&group_by=minute&from=${from}`);
  if (usage.ok) {
    const u = perMinute(usage.json.rows, CHARTED);
    section.append(
      chart("Requests per minute", "chart-requests", span, u.minutes, [{ label: "requests", values: u.values.requests }]),
      chart("Tokens per minute", "chart-tokens", span, u.minutes, [
        { label: "prompt", values: u.values.prompt_tokens },
        { label: "completion", values: u.values.completion_tokens },
        { label: "embedding", values: u.values.embedding_tokens },
      ]),
      latencyChart(span, u),
    );
  } else section.append(message(problem(usage), "error"));
  const denied = await call("GET", `/admin/v1/audit?tenant=${encodeURIComponent(t.id)}&decision=deny&since=${from}&limit=1000`);
  if (denied.ok) {
    const counts = new Map<string, number>();
    for (const e of denied.json.entries) {
      const minute = String(e.ts).slice(0, 16) + ":00Z";
      counts.set(minute, (counts.get(minute) ?? 0) + 1);
    }
    const minutes = [...counts.keys()].sort();
    section.append(chart("Denied requests per minute", "chart-errors", span, minutes, [{ label: "denied", values: minutes.map((m) => counts.get(m) ?? 0) }]));
  }

  // Keys: create, list, revoke. Secrets are never listed.
  const keys = await call("GET", `${path}/api-keys`);
  const keyName = h("input", { placeholder: "key name" }) as HTMLInputElement;
  const keyNote = h("div", {});
  section.append(
    h("h3", {}, "API keys"),
    h("div", { class: "inline" }, keyName, button("Create key", async () => {
      const k = await call("POST", `${path}/api-keys`, { name: keyName.value.trim() || "console" });
      keyNote.replaceChildren(k.ok ? shownOnce(k) : message(problem(k), "error"));
    })),
    keyNote,
  );
  if (keys.ok) {
    const rows = keys.json.api_keys.map((k: any) => ({ ...k, revoke: k.revoked_at ? "" : k.id }));
    const tbl = table(rows, ["id", "name", "role", "tags", "created_at", "revoked_at"], "keys");
    for (const [i, tr] of [...tbl.querySelectorAll("tbody tr")].entries()) {
      const k = rows[i];
      if (!k.revoked_at)
        tr.append(h("td", {}, button("Revoke", async () => {
          const d = await call("DELETE", `${path}/api-keys/${encodeURIComponent(k.id)}`);
          if (d.ok) void refresh();
          else keyNote.replaceChildren(message(problem(d), "error"));
        })));
    }
    section.append(tbl);
  }

  // Offboarding destroys the tenant's content: typed confirmation.
  const confirm = h("input", { placeholder: `type ${t.id} to confirm`, "data-testid": "offboard-confirm" }) as HTMLInputElement;
  const offboard = button("Offboard", async () => {
    if (confirm.value !== t.id) {
      note.replaceChildren(message(`type the tenant's id (${t.id}) to confirm`, "error"));
      return;
    }
    const d = await call("DELETE", path);
    if (d.ok) {
      location.hash = "#tenants";
    } else note.replaceChildren(message(problem(d), "error"));
  }, { class: "danger", "data-testid": "offboard" });
  section.append(h("h3", {}, "Offboard"), h("p", {}, "Destroys every model, knowledge base, table, policy, role, log and key of this tenant."), h("div", { class: "inline" }, confirm, offboard));
  return section;
}

/** `name{labels} value` lines of the Prometheus text, by metric name. */
function metrics(text: string): Map<string, { labels: string; value: number }[]> {
  const out = new Map<string, { labels: string; value: number }[]>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-z_]+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const list = out.get(m[1]) ?? [];
    list.push({ labels: m[2] ?? "", value: Number(m[3]) });
    out.set(m[1], list);
  }
  return out;
}

async function cache(): Promise<HTMLElement> {
  const r = await call("GET", "/metrics");
  if (!r.ok) return message(problem(r), "error");
  const m = metrics(r.text);
  const rows = [
    ["resident models", "fief_model_resident_models"],
    ["resident bytes", "fief_model_resident_bytes"],
    ["cache budget bytes", "fief_model_cache_budget_bytes"],
    ["loads", "fief_model_loads_total"],
    ["load failures", "fief_model_load_failures_total"],
    ["load seconds", "fief_model_load_seconds_total"],
    ["cache hits", "fief_model_cache_hits_total"],
    ["cache misses", "fief_model_cache_misses_total"],
    ["evictions", "fief_model_evictions_total"],
  ].map(([what, name]) => ({ what, value: (m.get(name) ?? []).reduce((a, s) => a + s.value, 0) }));
  const invocations = (m.get("fief_invocations_total") ?? []).map((s) => ({ series: s.labels, count: s.value }));
  return h("section", {}, h("h2", {}, "Model cache"), table(rows, ["what", "value"], "cache"), h("h3", {}, "Invocations by endpoint"), table(invocations, ["series", "count"], "invocations"));
}

async function audit(): Promise<HTMLElement> {
  const params = new URLSearchParams(location.hash.split("?")[1] ?? "");
  const tenantF = h("input", { name: "tenant", placeholder: "tenant", value: params.get("tenant") ?? "" }) as HTMLInputElement;
  const decision = h("select", { name: "decision" }, ...["", "allow", "deny"].map((d) => h("option", d === (params.get("decision") ?? "") ? { value: d, selected: "" } : { value: d }, d || "any decision"))) as HTMLSelectElement;
  const kind = h("select", { name: "kind" }, ...["", "authz", "admin", "authn", "usage"].map((d) => h("option", d === (params.get("kind") ?? "") ? { value: d, selected: "" } : { value: d }, d || "any kind"))) as HTMLSelectElement;
  const form = h("form", { class: "inline", "data-testid": "audit-filter" }, tenantF, decision, kind, h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (tenantF.value.trim()) q.set("tenant", tenantF.value.trim());
    if (decision.value) q.set("decision", decision.value);
    if (kind.value) q.set("kind", kind.value);
    location.hash = `#audit?${q}`;
  });
  const q = new URLSearchParams(params);
  q.set("limit", "200");
  const [entries, chain] = await Promise.all([call("GET", `/admin/v1/audit?${q}`), call("GET", "/admin/v1/audit/verify")]);
  const status = chain.ok
    ? chain.json.ok
      ? message(`chain verified: ${chain.json.entries} entries, head ${String(chain.json.head).slice(0, 16)}…, in the ${chain.json.place}`)
      : message(`chain broken: ${chain.json.error}`, "error")
    : message(problem(chain), "error");
  status.setAttribute("data-testid", "chain-status");
  const list = entries.ok
    ? table(entries.json.entries.slice().reverse(), ["seq", "ts", "kind", "tenant", "principal", "action", "resource", "decision", "reason"], "audit")
    : message(problem(entries), "error");
  return h("section", {}, h("h2", {}, "Audit log"), status, form, list);
}

/** A run of verify-isolation: in progress, or its report. */
function isolationRun(run: any): HTMLElement {
  if (!run) return message("No run yet on this gateway.");
  if (run.status === "running") return message(`Running since ${run.started_at}…`);
  const head = h("p", { class: run.status === "passed" ? "info" : "error", role: "status", "data-testid": "isolation-status" }, `${run.status.toUpperCase()}: ${run.summary ?? run.error}`);
  const when = h("p", { class: "hint" }, `started ${run.started_at}, finished ${run.finished_at}, ${Math.round(run.took_ms / 100) / 10} s`);
  if (run.status === "error") return h("div", {}, head, when);
  const skipped = run.skipped.length ? h("div", {}, h("h3", {}, "Skipped kinds"), table(run.skipped, ["kind", "reason"], "isolation-skipped")) : null;
  const failures = h("div", {}, h("h3", {}, "Attempts that were not denied"), table(run.failures, ["attacker", "victim", "principal", "kind", "action", "form", "status", "result", "detail"], "isolation-failures"));
  const rows = h(
    "details",
    {},
    h("summary", {}, `Every attacker, victim, kind and action (${run.rows.length} rows, ${run.attempts} attempts)`),
    table(run.rows, ["attacker", "victim", "kind", "action", "tries", "result", "broken"], "isolation-rows"),
  );
  return h("div", {}, head, when, failures, skipped, rows);
}

async function isolation(): Promise<HTMLElement> {
  const report = h("div", { "data-testid": "isolation-report" });
  const note = h("div", {});
  const section = h(
    "section",
    { "data-testid": "isolation" },
    h("h2", {}, "Isolation check"),
    h(
      "p",
      {},
      "verify-isolation makes a probe tenant per tier, plants canaries in every kind of resource, and tries every action of each probe tenant on every other's, by every addressing form and credential; then it offboards them. It passes with 0 LEAK, 0 ALLOWED and 0 UNEXPECTED.",
    ),
    button(
      "Run verify-isolation",
      async () => {
        const r = await call("POST", "/admin/v1/verify-isolation");
        if (!r.ok) {
          note.replaceChildren(message(problem(r), "error"));
          return;
        }
        note.replaceChildren();
        await poll();
      },
      { "data-testid": "run-isolation" },
    ),
    note,
    report,
  );
  // Polled while a run is in progress and this view is on screen.
  const poll = async (): Promise<void> => {
    const r = await call("GET", "/admin/v1/verify-isolation");
    if (!r.ok) {
      report.replaceChildren(message(problem(r), "error"));
      return;
    }
    report.replaceChildren(isolationRun(r.json.run));
    if (r.json.run?.status === "running") setTimeout(() => void (report.isConnected && poll()), 1500);
  };
  await poll();
  return section;
}

start(
  "fief · operator",
  "Admin token",
  async () => {
    const r = await call("GET", "/admin/v1/tenants");
    if (r.ok) r.json = { who: "operator" };
    return r;
  },
  [
    { name: "tenants", label: "Tenants", render: tenants },
    { name: "tenant", label: "Tenant", hidden: true, render: tenant },
    { name: "cache", label: "Model cache", render: cache },
    { name: "audit", label: "Audit log", render: audit },
    { name: "isolation", label: "Isolation", render: isolation },
  ],
);
