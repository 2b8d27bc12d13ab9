// The /rankings page: fetches /v1/rankings and /v1/rankings/series from this gateway and
// draws them. No framework, no build step, nothing loaded from elsewhere. Every name shown
// (apps name themselves in request headers) goes through textContent, never innerHTML.
"use strict";

const PALETTE = ["#6366f1", "#f59e0b", "#10b981", "#ef4444", "#3b82f6",
                 "#ec4899", "#14b8a6", "#8b5cf6", "#f97316", "#84cc16"];
const OTHERS_COLOUR = "#9ca3af";
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function humanTokens(n) {
  const size = Math.abs(n);
  if (size < 1000) return String(Math.round(n));
  const units = ["K", "M", "B", "T"];
  let exp = Math.min(units.length, Math.floor((String(Math.round(size)).length - 1) / 3));
  let value = size / Math.pow(1000, exp);
  let text = value >= 99.95 ? value.toFixed(0) : value >= 9.995 ? value.toFixed(1) : value.toFixed(2);
  if (text.includes(".")) text = text.replace(/0+$/, "").replace(/\.$/, "");
  if (text === "1000" && exp < units.length) { exp += 1; text = "1"; }
  return (n < 0 ? "-" : "") + text + units[exp - 1];
}
const pct = (x) => (x * 100).toFixed(1) + "%";
const signedPct = (x) => (x >= 0 ? "+" : "") + (x * 100).toFixed(1) + "%";
const num = (x, unit) => (x === null || x === undefined ? "–" : x.toLocaleString(undefined, {maximumFractionDigits: 1}) + (unit || ""));
const price = (x) => (x === null || x === undefined ? "–" : "$" + x.toFixed(2));
// A provider's uptime: the share of its attempts that answered, with the counts on hover.
const uptimeCell = (t) => el("td", {class: "num", title: `${t.attempts - t.attempts_failed} of ${t.attempts} attempts answered`},
  t.uptime === null || t.uptime === undefined ? "–" : (t.uptime * 100).toFixed(1) + "%");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- fetching -------------------------------------------------------------------------------
// The key lives in sessionStorage: it survives a reload of this tab and is gone when the tab
// closes, instead of sitting in localStorage for any later script on this origin to read.
// It only ever travels in the Authorization header, never in a URL.
const KEY_NAME = "gateway-rankings-key";
function apiKey() { try { return sessionStorage.getItem(KEY_NAME) || ""; } catch (e) { return ""; } }
function keepKey(key) { try { sessionStorage.setItem(KEY_NAME, key); } catch (e) { /* storage disabled */ } }
try { localStorage.removeItem(KEY_NAME); } catch (e) { /* where earlier versions kept it */ }

async function getJSON(path) {
  const headers = {};
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  const response = await fetch(path, {headers});
  if (response.status === 401) { const e = new Error("unauthorized"); e.status = 401; throw e; }
  const body = await response.json();
  if (!response.ok) throw new Error((body.error && body.error.message) || ("HTTP " + response.status));
  return body;
}

const LABELS = {window: "window", granularity: "chart", end: "end date"};
const CONTROLS = ["window", "granularity", "end", "key", "team"];

// The query string sets the controls; a value a control cannot take (`?window=year`) would
// leave it blank and the API answering 400, so it falls back to the default, says so, and
// the address bar is corrected.
function params() {
  const form = $("controls");
  const q = new URLSearchParams(location.search);
  const refused = [];
  for (const name of CONTROLS) {
    const wanted = q.get(name);
    if (!wanted) continue;
    const control = form.elements[name];
    control.value = wanted;
    if (control.value !== wanted) {
      control.value = control.tagName === "SELECT" ? [...control.options].find((o) => o.defaultSelected).value : "";
      const shown = control.tagName === "SELECT" ? control.selectedOptions[0].textContent.toLowerCase() : "the latest";
      refused.push(`Unknown ${LABELS[name]} “${wanted}”: showing ${shown} instead.`);
    }
  }
  $("notice").textContent = refused.join(" ");
  $("notice").hidden = !refused.length;
  if (refused.length) history.replaceState(null, "", "?" + controlQuery().toString());
  const value = (name) => form.elements[name].value.trim();
  return {window: value("window"), granularity: value("granularity"), end: value("end"), key: value("key"), team: value("team")};
}

function controlQuery() {
  const p = new URLSearchParams();
  const form = $("controls");
  for (const name of CONTROLS) if (form.elements[name].value.trim()) p.set(name, form.elements[name].value.trim());
  return p;
}

async function load() {
  const p = params();
  let end = p.end ? "&end=" + encodeURIComponent(p.end) : "";
  // Whose traffic: the admin's filters (a client key's own traffic needs none).
  for (const name of ["key", "team"]) if (p[name]) end += `&${name}=` + encodeURIComponent(p[name]);
  const periods = p.granularity === "day" ? 28 : 8;
  document.body.dataset.state = "loading";
  $("loading").hidden = false;
  $("error").hidden = true;
  try {
    const [rankings, series] = await Promise.all([
      getJSON(`/v1/rankings?window=${p.window}&limit=20${end}`),
      getJSON(`/v1/rankings/series?granularity=${p.granularity}&periods=${periods}&limit=10${end}`),
    ]);
    $("key-prompt").hidden = true;
    drawScope(rankings.scope);
    const colours = colourMap(series);
    drawChart(series, colours);
    drawLeaderboard(rankings, colours);
    drawAuthors(rankings, authorColours(series, rankings));
    drawCategories(rankings);
    drawApps(rankings);
    drawThroughput(rankings);
    document.body.dataset.state = "ready";
  } catch (error) {
    if (error.status === 401) $("key-prompt").hidden = false;
    else { $("error").textContent = "Could not load the rankings: " + error.message; $("error").hidden = false; }
    document.body.dataset.state = "error";
  } finally {
    $("loading").hidden = true;
  }
}

// Says whose traffic is shown; the key and team filters are there only for a viewer who may
// see every tenant (a client key sees its own calls, and the API refuses it other filters).
function drawScope(scope) {
  $("admin-filters").hidden = !scope.all_visible;
  const parts = [];
  if (scope.key) parts.push(`key ${scope.key}`);
  if (scope.team) parts.push(`team ${scope.team}`);
  if (!scope.all_visible) $("scope").textContent = `Your key's own traffic (${scope.key}).`;
  else $("scope").textContent = parts.length ? `Traffic of ${parts.join(", ")}.` : "All traffic on this gateway.";
}

function colourMap(series) {
  const map = new Map();
  series.models.forEach((m, i) => map.set(m.model, PALETTE[i % PALETTE.length]));
  return map;
}

// An author takes the colour of its biggest model in the chart, so both views agree.
function authorColours(series, rankings) {
  const map = new Map();
  series.models.forEach((m, i) => { if (!map.has(m.author)) map.set(m.author, PALETTE[i % PALETTE.length]); });
  let spare = series.models.length;
  for (const a of rankings.authors) if (!map.has(a.author)) map.set(a.author, PALETTE[spare++ % PALETTE.length]);
  return map;
}

// -- chart: stacked bars of tokens per model per period -------------------------------------
function niceCeiling(x) {
  if (x <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}
function shortDate(iso) {
  const d = new Date(iso + "T00:00:00Z");
  return d.toLocaleDateString("en-US", {month: "short", day: "numeric", timeZone: "UTC"});
}

function drawChart(series, colours) {
  const box = $("chart");
  box.replaceChildren();
  const W = 1000, H = 320, left = 56, right = 8, top = 12, bottom = 28;
  const plotW = W - left - right, plotH = H - top - bottom;
  const n = series.periods.length;
  const max = niceCeiling(Math.max(0, ...series.totals));
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img"});
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    root.append(svg("line", {x1: left, x2: W - right, y1: y, y2: y, class: "grid"}));
    root.append(svg("text", {x: left - 8, y: y + 4, "text-anchor": "end", class: "axis"}, humanTokens((max * i) / 4)));
  }
  const slot = plotW / Math.max(n, 1), barW = Math.max(2, slot * 0.7);
  const layers = series.models.map((m) => ({name: m.model, values: m.tokens, colour: colours.get(m.model)}));
  layers.push({name: "Others", values: series.others, colour: OTHERS_COLOUR});
  const labelEvery = Math.ceil(n / 12);
  series.periods.forEach((period, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let y = top + plotH;
    for (const layer of layers) {
      const v = layer.values[i];
      if (!v) continue;
      const h = (plotH * v) / max;
      y -= h;
      const rect = svg("rect", {x: x.toFixed(2), y: y.toFixed(2), width: barW.toFixed(2), height: h.toFixed(2), fill: layer.colour});
      rect.append(svg("title", {}, `${layer.name}: ${humanTokens(v)} tokens (${period.start} – ${period.end})`));
      root.append(rect);
    }
    if (i % labelEvery === 0) {
      root.append(svg("text", {x: x + barW / 2, y: H - 8, "text-anchor": "middle", class: "axis"}, shortDate(period.start)));
    }
  });
  if (!series.totals.some((t) => t > 0)) {
    root.append(svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis"}, "No usage recorded in this range yet"));
  }
  box.append(root);
  const legend = $("legend");
  legend.replaceChildren(...layers.filter((l) => l.values.some((v) => v > 0)).map((l) =>
    el("li", {}, el("span", {class: "swatch", style: `background:${l.colour}`}), l.name)));
  const first = series.periods[0], last = series.periods[n - 1];
  $("chart-caption").textContent = n ? `${series.granularity === "day" ? "Daily" : "Weekly"} tokens, ${first.start} – ${last.end}` : "";
}

// -- ranked lists ---------------------------------------------------------------------------
function changeCell(entry) {
  if (entry.previous_tokens === 0 || entry.growth === null) return el("span", {class: "change new"}, "new");
  const cls = entry.growth >= 0 ? "up" : "down";
  const arrow = entry.growth >= 0 ? "▲ " : "▼ ";
  return el("span", {class: "change " + cls, title: `previously #${entry.previous_rank}`}, arrow + signedPct(entry.growth).replace(/^[+-]/, ""));
}

function rankedItem(rank, name, detail, tokens, extra, colour) {
  const label = el("span", {class: "name"}, name);
  if (colour) label.prepend(el("span", {class: "swatch", style: `background:${colour};margin-right:6px`}));
  if (detail) label.append(el("small", {}, detail));
  return el("li", {}, el("span", {class: "rank"}, rank + "."), label, el("span", {class: "tokens"}, humanTokens(tokens)), extra || el("span"));
}

function drawLeaderboard(r, colours) {
  $("window-caption").textContent = `${r.window.start} – ${r.window.end} vs previous ${r.window.days === 1 ? "day" : r.window.days + " days"}`;
  $("leaderboard").replaceChildren(...r.models.map((m) =>
    rankedItem(m.rank, m.model, `by ${m.author} · ${pct(m.share)}`, m.tokens, changeCell(m), colours.get(m.model))));
  $("others").textContent = r.others.models ? `Others (${r.others.models} models): ${humanTokens(r.others.tokens)} tokens, ${pct(r.others.share)}` : "";
  if (!r.models.length) $("leaderboard").append(el("li", {}, "", el("span", {class: "muted"}, "No usage in this window."), "", ""));
}

function drawAuthors(r, colours) {
  const bar = $("share-bar");
  bar.replaceChildren(...r.authors.map((a) =>
    el("span", {style: `width:${(a.share * 100).toFixed(3)}%;background:${colours.get(a.author)}`, title: `${a.author} ${pct(a.share)}`})));
  $("authors").replaceChildren(...r.authors.map((a) =>
    rankedItem(a.rank, a.author, pct(a.share) + " of tokens", a.tokens, changeCell(a), colours.get(a.author))));
}

function drawCategories(r) {
  const select = $("category");
  const names = Object.keys(r.categories);
  const wanted = select.value || (names.includes("programming") ? "programming" : names[0]);
  select.replaceChildren(...names.map((c) => el("option", {value: c}, c)));
  if (wanted && names.includes(wanted)) select.value = wanted;
  const show = () => {
    const models = r.categories[select.value] || [];
    $("category-leaders").replaceChildren(...models.map((m) =>
      rankedItem(m.rank, m.model, `by ${m.author}`, m.tokens, el("span", {class: "change"}, pct(m.share)))));
    if (!models.length) $("category-leaders").append(el("li", {}, "", el("span", {class: "muted"}, "No categorised usage."), "", ""));
  };
  select.onchange = show;
  show();
}

function drawApps(r) {
  const appName = (a) => a.title || a.app;
  const detail = (a) => (a.title && a.app !== a.title ? a.app : "");
  $("apps").replaceChildren(...r.apps.top.map((a) => rankedItem(a.rank, appName(a), detail(a), a.tokens, changeCell(a))));
  $("trending").replaceChildren(...r.apps.trending.map((a) =>
    rankedItem(a.trending_rank, appName(a), detail(a), a.tokens,
      el("span", {class: "change " + (a.trend >= 0 ? "up" : "down")}, (a.trend >= 0 ? "+" : "") + humanTokens(a.trend)))));
}

function drawThroughput(r) {
  const body = $("throughput").tBodies[0];
  body.replaceChildren(...r.throughput.map((t) => el("tr", {},
    el("td", {}, t.model), el("td", {}, t.backend),
    el("td", {class: "num"}, num(t.median_tokens_per_second)), el("td", {class: "num"}, num(t.median_latency_ms, " ms")),
    el("td", {class: "num"}, num(t.median_ttft_ms, " ms")), el("td", {class: "num"}, price(t.input_price)),
    el("td", {class: "num"}, price(t.output_price)), el("td", {class: "num"}, t.requests.toLocaleString()),
    uptimeCell(t))));
}

// -- wiring ---------------------------------------------------------------------------------
$("controls").addEventListener("change", () => {
  history.replaceState(null, "", "?" + controlQuery().toString());
  load();
});
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  keepKey($("key-input").value);
  load();
});
load();
