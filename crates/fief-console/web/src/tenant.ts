// The tenant console (data listener): the signed-in tenant's own usage,
// models, knowledge bases (with search), private log, policies (with
// explain), roles and quotas. It calls only the tenant API, which answers
// about the caller's own tenant whatever a page or a request names.
import { button, call, CHARTED, chart, h, latencyChart, message, perMinute, problem, lastSixHours, start, table } from "./common";

async function usage(): Promise<HTMLElement> {
  const span = lastSixHours();
  const r = await call("GET", `/api/v1/usage?group_by=minute&from=${span.from}`);
  if (!r.ok) return message(problem(r), "error");
  const u = perMinute(r.json.rows, CHARTED);
  const total = await call("GET", "/api/v1/usage?group_by=model");
  return h(
    "section",
    {},
    h("h2", {}, "Usage"),
    chart("Requests per minute", "chart-requests", span, u.minutes, [{ label: "requests", values: u.values.requests }]),
    chart("Tokens per minute", "chart-tokens", span, u.minutes, [
      { label: "prompt", values: u.values.prompt_tokens },
      { label: "completion", values: u.values.completion_tokens },
      { label: "embedding", values: u.values.embedding_tokens },
    ]),
    latencyChart(span, u),
    h("h3", {}, "This month, by model"),
    total.ok ? table(total.json.rows, ["kind", "model", "requests", "prompt_tokens", "completion_tokens", "compute_us", "duration_us"], "usage-by-model") : message(problem(total), "error"),
  );
}

async function models(): Promise<HTMLElement> {
  const [onnx, fm] = await Promise.all([call("GET", "/api/v1/models"), call("GET", "/v1/models")]);
  return h(
    "section",
    {},
    h("h2", {}, "Models"),
    onnx.ok ? table(onnx.json.models, ["name", "version", "size_bytes", "sha256", "tags", "updated_at"], "models") : message(problem(onnx), "error"),
    h("h3", {}, "Foundation models this credential may call"),
    fm.ok ? table(fm.json.data ?? [], ["id", "owned_by"], "foundation-models") : message(problem(fm), "error"),
  );
}

async function knowledge(name: string): Promise<HTMLElement> {
  const list = await call("GET", "/api/v1/knowledge-bases");
  if (!list.ok) return message(problem(list), "error");
  const section = h("section", {}, h("h2", {}, "Knowledge bases"), table(list.json.knowledge_bases, ["name", "documents", "chunks", "placement", "index"], "knowledge-bases", (kb) => `#kb/${encodeURIComponent(kb.name)}`));
  if (!name) return section;
  const path = `/api/v1/knowledge-bases/${encodeURIComponent(name)}`;
  const kb = await call("GET", path);
  if (!kb.ok) {
    section.append(message(problem(kb), "error"));
    return section;
  }
  const docs = await call("GET", `${path}/documents`);
  const query = h("input", { type: "search", placeholder: `search ${name}`, "data-testid": "kb-search" }) as HTMLInputElement;
  const results = h("div", { "data-testid": "kb-results" });
  const form = h("form", { class: "inline" }, query, h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = await call("POST", `${path}/query`, { query: query.value, top_k: 5 });
    results.replaceChildren(r.ok ? table(r.json.results.map((x: any) => ({ ...x, score: x.score.toFixed(3) })), ["document_id", "chunk", "score", "text"], "kb-hits") : message(problem(r), "error"));
  });
  section.append(h("h3", {}, `Base ${name}`), docs.ok ? table(docs.json.documents, ["id", "chunks", "tokens", "updated_at"], "documents") : message(problem(docs), "error"), form, results);
  return section;
}

async function logs(): Promise<HTMLElement> {
  const r = await call("GET", "/api/v1/logs?limit=100");
  if (!r.ok) return h("section", {}, h("h2", {}, "Private log"), message(problem(r), "error"));
  return h(
    "section",
    {},
    h("h2", {}, "Private log"),
    h("p", {}, "Only this tenant can read these records; the operator cannot."),
    table(r.json.records ?? [], ["seq", "at", "kind", "model", "principal", "request", "response"], "logs"),
  );
}

async function policies(): Promise<HTMLElement> {
  const r = await call("GET", "/api/v1/policies");
  if (!r.ok) return message(problem(r), "error");
  const action = h("input", { value: "GetModel", "aria-label": "action" }) as HTMLInputElement;
  const resource = h("input", { placeholder: "frn:fief:model:<tenant>/<model>", "aria-label": "resource" }) as HTMLInputElement;
  const out = h("div", { "data-testid": "explain" });
  const explain = button("Explain", async () => {
    const e = await call("POST", "/api/v1/policies/explain", { action: action.value.trim(), resource: resource.value.trim() });
    out.replaceChildren(e.ok ? h("pre", {}, JSON.stringify(e.json, null, 2)) : message(problem(e), "error"));
  });
  const docs = (r.json.policies ?? []).map((p: any) => h("details", {}, h("summary", {}, p.id), h("pre", {}, p.policy ?? p.text ?? "")));
  return h("section", {}, h("h2", {}, "Policies"), ...(docs.length ? docs : [h("p", { class: "empty" }, "none")]), h("h3", {}, "Explain a decision"), h("div", { class: "inline" }, action, resource, explain), out);
}

async function roles(): Promise<HTMLElement> {
  const [r, q] = await Promise.all([call("GET", "/api/v1/roles"), call("GET", "/api/v1/quotas")]);
  return h(
    "section",
    {},
    h("h2", {}, "Roles"),
    r.ok ? table(r.json.roles ?? [], ["name", "external_id", "max_session_secs"], "roles") : message(problem(r), "error"),
    h("h2", {}, "Quotas and limits"),
    q.ok ? table(q.json.levels ?? [], ["level", "limits", "remaining", "reset_seconds", "spent_this_month"], "quotas") : message(problem(q), "error"),
    q.ok ? table(q.json.subjects ?? [], ["subject", "limits"], "quota-subjects") : "",
  );
}

start(
  "fief · tenant",
  "API key or session token",
  async () => {
    const r = await call("GET", "/api/v1/me");
    if (r.ok) r.json = { principal: `${r.json.tenant} · ${r.json.principal}` };
    return r;
  },
  [
    { name: "usage", label: "Usage", render: usage },
    { name: "models", label: "Models", render: models },
    { name: "kb", label: "Knowledge bases", render: knowledge },
    { name: "logs", label: "Private log", render: logs },
    { name: "policies", label: "Policies", render: policies },
    { name: "roles", label: "Roles and limits", render: roles },
  ],
);
