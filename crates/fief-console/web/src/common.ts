// What both consoles share: the sign-in that keeps the credential in memory
// only, one fetch wrapper, DOM helpers that only ever set text (never
// HTML), tables, and uPlot charts of per-minute series.
//
// The credential lives in a closure variable of this module: never in the
// URL, localStorage, sessionStorage or a cookie. A reload signs out. Every
// call sends it as `Authorization: Bearer`, which a browser never attaches
// on its own, so another site cannot make a signed-in console act (no CSRF).
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";

let credential: string | null = null;

export interface Reply {
  status: number;
  ok: boolean;
  json: any;
  text: string;
}

export async function call(method: string, path: string, body?: unknown): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (credential) headers["Authorization"] = `Bearer ${credential}`;
  let payload: string | undefined;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body: payload, credentials: "omit", cache: "no-store" });
  const text = await r.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: r.status, ok: r.ok, json, text };
}

/** The error message of a reply, as the API words it. */
export function problem(r: Reply): string {
  const e = r.json?.error;
  return e ? `${r.status} ${e.code}: ${e.message}` : `${r.status}: ${r.text.slice(0, 200)}`;
}

type Child = Node | string | number | null | undefined | false;

export function h(tag: string, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return el;
}

export function button(label: string, onClick: () => void | Promise<void>, attrs: Record<string, string> = {}): HTMLElement {
  const b = h("button", { type: "button", ...attrs }, label);
  b.addEventListener("click", () => void onClick());
  return b;
}

/** A cell's text: scalars as they are, anything else as compact JSON. */
function cell(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function table(rows: any[], columns: string[], testid: string, link?: (row: any) => string): HTMLElement {
  if (rows.length === 0) return h("p", { class: "empty", "data-testid": testid }, "none");
  const head = h("tr", {}, ...columns.map((c) => h("th", {}, c)));
  const body = rows.map((row) =>
    h(
      "tr",
      {},
      ...columns.map((c, i) => {
        const text = cell(row[c]);
        if (i === 0 && link) return h("td", {}, h("a", { href: link(row) }, text));
        return h("td", {}, text);
      }),
    ),
  );
  return h("table", { "data-testid": testid }, h("thead", {}, head), h("tbody", {}, ...body));
}

export function message(text: string, kind: "error" | "info" = "info"): HTMLElement {
  return h("p", { class: kind, role: kind === "error" ? "alert" : "status" }, text);
}

/** The charts' window: the last six hours, in Unix seconds and as the API's `from`. */
export function lastSixHours(): { from: string; start: number; end: number } {
  const end = Math.ceil(Date.now() / 1000) + 60;
  const start = end - 6 * 3600 - 60;
  return { from: new Date(start * 1000).toISOString().replace(/\.\d+Z$/, "Z"), start, end };
}

/** One per-minute series chart over `window`; the points are also a table (for screen readers and tests). */
export function chart(
  title: string,
  testid: string,
  window: { start: number; end: number },
  minutes: string[],
  series: { label: string; values: number[] }[],
): HTMLElement {
  const box = h("figure", { class: "chart", "data-testid": testid, "data-points": String(minutes.length) });
  box.append(h("figcaption", {}, title));
  if (minutes.length === 0) {
    box.append(h("p", { class: "empty" }, "no data in this range"));
    return box;
  }
  const xs = minutes.map((m) => Date.parse(m) / 1000);
  const plot = h("div", { class: "plot" });
  box.append(plot);
  const colours = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];
  // Drawn once the figure is in the page (uPlot measures its container).
  requestAnimationFrame(() => {
    new uPlot(
      {
        width: Math.min(1100, Math.max(480, plot.clientWidth || 900)),
        height: 200,
        scales: { x: { time: true, range: [window.start, window.end] } },
        series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: colours[i % colours.length], points: { show: true } }))],
        axes: [{}, {}],
      },
      [xs, ...series.map((s) => s.values)],
      plot,
    );
  });
  const rows = minutes.map((m, i) => h("tr", {}, h("td", {}, m), ...series.map((s) => h("td", {}, String(s.values[i])))));
  box.append(
    h(
      "details",
      {},
      h("summary", {}, minutes.length === 1 ? "1 point" : `${minutes.length} points`),
      h("table", { class: "points" }, h("thead", {}, h("tr", {}, h("th", {}, "minute"), ...series.map((s) => h("th", {}, s.label)))), h("tbody", {}, ...rows)),
    ),
  );
  return box;
}

/** The usage fields the per-minute charts read. */
export const CHARTED = ["requests", "prompt_tokens", "completion_tokens", "embedding_tokens", "compute_us", "duration_us"];

/** Per minute: the mean time from a request's arrival to its answer (a
 *  foundation-model call: to its last byte), and the mean ONNX run time. */
export function latencyChart(window: { start: number; end: number }, u: { minutes: string[]; values: Record<string, number[]> }): HTMLElement {
  const perRequest = (field: string) => u.minutes.map((_, i) => (u.values.requests[i] ? Math.round(u.values[field][i] / u.values.requests[i] / 10) / 100 : 0));
  return chart("Latency per request (ms, mean of the minute)", "chart-latency", window, u.minutes, [
    { label: "arrival to answer", values: perRequest("duration_us") },
    { label: "ONNX compute", values: perRequest("compute_us") },
  ]);
}

/** Usage rows grouped by minute → one value per minute for each field. */
export function perMinute(rows: any[], fields: string[]): { minutes: string[]; values: Record<string, number[]> } {
  const by = new Map<string, Record<string, number>>();
  for (const r of rows) {
    if (!r.minute) continue;
    const acc = by.get(r.minute) ?? {};
    for (const f of fields) acc[f] = (acc[f] ?? 0) + Number(r[f] ?? 0);
    by.set(r.minute, acc);
  }
  const minutes = [...by.keys()].sort();
  const values: Record<string, number[]> = {};
  for (const f of fields) values[f] = minutes.map((m) => by.get(m)?.[f] ?? 0);
  return { minutes, values };
}

export interface View {
  name: string;
  label: string;
  /** Reached by a link only (it needs an argument). */
  hidden?: boolean;
  render: (arg: string) => Promise<HTMLElement>;
}

/**
 * The page: a sign-in form, then a navigation bar and the view the hash
 * names (`#models`, `#tenant/acme`). Views fetch on every visit.
 */
export function start(title: string, credentialLabel: string, check: () => Promise<Reply>, views: View[]): void {
  const app = document.getElementById("app")!;
  const main = h("main", { id: "view" });

  async function show(): Promise<void> {
    // `#name/arg?query`: the query is the view's own (filters).
    const [route] = location.hash.replace(/^#/, "").split("?");
    const [name, ...rest] = route.split("/").map(decodeURIComponent);
    const view = views.find((v) => v.name === name) ?? views[0];
    main.replaceChildren(message("loading…"));
    try {
      main.replaceChildren(await view.render(rest.join("/")));
    } catch (e) {
      main.replaceChildren(message(`could not show ${view.label}: ${e}`, "error"));
    }
    for (const a of app.querySelectorAll("nav a")) a.classList.toggle("current", a.getAttribute("href") === `#${view.name}`);
  }

  function signedIn(who: string): void {
    const nav = h("nav", {}, ...views.filter((v) => !v.hidden).map((v) => h("a", { href: `#${v.name}` }, v.label)));
    const out = button("Sign out", () => {
      credential = null;
      location.hash = "";
      signIn();
    });
    app.replaceChildren(h("header", {}, h("h1", {}, title), h("span", { class: "who", "data-testid": "who" }, who), out), nav, main);
    window.onhashchange = () => void show();
    void show();
  }

  function signIn(): void {
    window.onhashchange = null;
    const input = h("input", { type: "password", id: "credential", autocomplete: "off", spellcheck: "false", required: "" }) as HTMLInputElement;
    const note = h("div", {});
    const form = h(
      "form",
      { class: "signin" },
      h("h1", {}, title),
      h("label", { for: "credential" }, credentialLabel),
      input,
      h("button", { type: "submit" }, "Sign in"),
      h("p", { class: "hint" }, "Kept in this page's memory only: reloading signs you out."),
      note,
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      credential = input.value.trim();
      input.value = "";
      const r = await check();
      if (!r.ok) {
        credential = null;
        note.replaceChildren(message(`sign-in refused: ${problem(r)}`, "error"));
        return;
      }
      signedIn(r.json?.principal ?? r.json?.who ?? "signed in");
    });
    app.replaceChildren(form);
    input.focus();
  }

  signIn();
}
