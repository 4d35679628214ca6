// The lab's page: draws each snapshot the server pushes (/api/events) as
// an SVG picture of the cluster and a list of Services, and asks the
// server for traces (/api/trace). Plain JavaScript, no build step.
"use strict";

const page = {
  snapshot: null,   // the latest snapshot
  selected: "",     // "namespace/name" of the selected Service
  draws: 0,         // snapshots drawn, for tests
  firstDrawMs: 0,   // how long the first (complete) drawing took
  lastDrawMs: 0,    // how long the latest took
};
window.svcproxyPage = page;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

// shorten keeps the start and the end of a long name (a pod's random
// suffix tells pods apart).
function shorten(s, max) {
  if (s.length <= max) return s;
  const tail = Math.floor((max - 1) / 2);
  return s.slice(0, max - 1 - tail) + "…" + s.slice(s.length - tail);
}

function ago(from, to) {
  if (!from || from.startsWith("0001-")) return "never";
  const s = Math.max(0, Math.round((Date.parse(to) - Date.parse(from)) / 1000));
  return s < 60 ? s + " s ago" : Math.round(s / 60) + " min ago";
}

// --- the picture -----------------------------------------------------------

const layout = {width: 1200, margin: 16, podH: 40, podGap: 6, headH: 70, maxRoutes: 4};

// routeLines are the load balancer's routes in words, at most maxRoutes.
function routeLines(snap) {
  const lines = snap.routes.map(r => `${r.address} → ${r.nodes.join(", ") || "no node"}`);
  if (lines.length > layout.maxRoutes) {
    return lines.slice(0, layout.maxRoutes - 1).concat(`… and ${lines.length - layout.maxRoutes + 1} more`);
  }
  return lines.length ? lines : ["no address routed"];
}

function drawCluster(snap) {
  const svg = document.getElementById("cluster");
  const width = Math.max(900, svg.clientWidth || layout.width);
  const n = Math.max(1, snap.nodes.length);
  const nodeW = (width - layout.margin * (n + 1)) / n;
  const cols = Math.max(1, Math.floor((nodeW - 12) / 170));
  const podW = (nodeW - 12 - (cols - 1) * layout.podGap) / cols;
  const rows = Math.max(1, ...snap.nodes.map(nd => Math.ceil(nd.pods.length / cols)));
  const hcRows = Math.max(0, ...snap.nodes.map(nd => nd.healthChecks.length));
  const nodeH = layout.headH + rows * (layout.podH + layout.podGap) + (hcRows ? 20 + hcRows * 16 : 0) + 8;
  const lbH = 26 + 14 * routeLines(snap).length;
  const top = Math.max(90, lbH + 36);
  const height = top + nodeH + layout.margin;
  const endpointPods = selectedPods(snap);
  const maxWindow = Math.max(1, ...snap.nodes.flatMap(nd => nd.pods.map(p => p.window)));
  const parts = [
    ["defs", `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#b89a6b"/></marker></defs>`],
    ["outside", `<g>${drawOutside(snap, width, nodeW, top, lbH)}</g>`],
  ];
  snap.nodes.forEach((nd, i) => {
    const x = layout.margin + i * (nodeW + layout.margin);
    parts.push(["node " + nd.name, drawNode(nd, snap, {x, y: top, w: nodeW, h: nodeH, cols, podW, endpointPods, maxWindow})]);
  });
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", height);
  patch(svg, parts, true);
}

// patch makes a container's children the elements of items, [key, html]
// pairs in order, and replaces only those whose html changed: most of the
// page stays as it is from one second to the next, and the browser redraws
// only what moved.
function patch(container, items, svg) {
  if (!container.firstElementChild) return fill(container, items, svg);
  const old = new Map([...container.children].map(el => [el.dataset.key, el]));
  let prev = null;
  for (const [key, html] of items) {
    let el = old.get(key);
    old.delete(key);
    if (!el || el.svcproxyHTML !== html) {
      const fresh = parseElement(html, svg);
      fresh.dataset.key = key;
      fresh.svcproxyHTML = html;
      if (el) el.replaceWith(fresh);
      el = fresh;
    }
    const next = prev ? prev.nextSibling : container.firstChild;
    if (next !== el) container.insertBefore(el, next);
    prev = el;
  }
  for (const el of old.values()) el.remove();
}

// fill draws items into an empty container, parsing them all at once.
function fill(container, items, svg) {
  const html = items.map(([, h]) => h).join("");
  const t = document.createElement("template");
  t.innerHTML = svg ? `<svg xmlns="http://www.w3.org/2000/svg">${html}</svg>` : html;
  const els = [...(svg ? t.content.firstElementChild : t.content).children];
  els.forEach((el, i) => {
    el.dataset.key = items[i][0];
    el.svcproxyHTML = items[i][1];
  });
  container.append(...els);
}

function parseElement(html, svg) {
  const t = document.createElement("template");
  if (!svg) {
    t.innerHTML = html;
    return t.content.firstElementChild;
  }
  t.innerHTML = `<svg xmlns="http://www.w3.org/2000/svg">${html}</svg>`;
  return t.content.firstElementChild.firstElementChild;
}

// drawOutside draws the client, the load balancer, the LAN and the load
// balancer's routes to the nodes that passed its health checks.
function drawOutside(snap, width, nodeW, top, lbH) {
  const nodeX = name => {
    const i = snap.nodes.findIndex(nd => nd.name === name);
    return layout.margin + i * (nodeW + layout.margin) + nodeW / 2;
  };
  const lbX = width / 2 - 170, lbW = 340;
  const routes = routeLines(snap);
  const out = [
    `<line class="lan" x1="${layout.margin}" y1="${top - 14}" x2="${width - layout.margin}" y2="${top - 14}"/>`,
    `<line class="lan" x1="${layout.margin + 115}" y1="66" x2="${layout.margin + 115}" y2="${top - 14}"/>`,
    `<text class="small" x="${width - layout.margin}" y="${top - 20}" text-anchor="end">LAN 198.51.100.0/24</text>`,
    `<g data-client="${esc(snap.clientIP)}"><rect class="outside" x="${layout.margin}" y="8" width="230" height="58" rx="6"/>`,
    `<text class="title" x="${layout.margin + 10}" y="28">client</text>`,
    `<text x="${layout.margin + 10}" y="46">${esc(snap.clientIP)}: the outside world</text></g>`,
    `<g data-lb="${esc(snap.lbPool)}"><rect class="outside" x="${lbX}" y="8" width="${lbW}" height="${lbH}" rx="6"/>`,
    `<text class="title" x="${lbX + 10}" y="26">load balancer <tspan class="small">pool ${esc(snap.lbPool)}</tspan></text>`,
  ];
  routes.forEach((r, i) =>
    out.push(`<text class="small" x="${lbX + 10}" y="${42 + 14 * i}">${esc(r)}</text>`));
  out.push("</g>");
  const routed = new Set(snap.routes.flatMap(r => r.nodes));
  for (const name of routed) {
    out.push(`<line class="route" x1="${width / 2}" y1="${8 + lbH}" x2="${nodeX(name)}" y2="${top - 2}"/>`);
  }
  return out.join("");
}

function drawNode(nd, snap, g) {
  const p = nd.proxy;
  const healthy = p.healthz === 200;
  const sync = p.syncs ? `synced ${ago(p.lastSync, snap.at)} (${p.full ? "full" : "partial"}, ${esc(p.took)}), ${p.syncs} syncs` + (p.failures ? `, ${p.failures} failed` : "") : "no sync yet";
  const out = [
    `<g class="node" data-node="${esc(nd.name)}">`,
    `<rect class="node-box" x="${g.x}" y="${g.y}" width="${g.w}" height="${g.h}" rx="8"/>`,
    `<text class="title" x="${g.x + 10}" y="${g.y + 18}">${esc(nd.name)} <tspan class="small">${esc(nd.zone)} · ${nd.ready ? "Ready" : "NotReady"}</tspan></text>`,
    `<text class="small" x="${g.x + 10}" y="${g.y + 34}">${esc(nd.ip)} · pods ${esc(nd.podCIDR)}</text>`,
    `<circle class="${healthy ? "ok" : "bad"}" cx="${g.x + 15}" cy="${g.y + 47}" r="5"/>`,
    `<text class="small" x="${g.x + 25}" y="${g.y + 51}" data-proxy="${healthy ? "healthy" : "unhealthy"}">svcproxy ${healthy ? "healthy" : "unhealthy (" + (p.healthz || "no answer") + ")"}: ${sync}</text>`,
  ];
  if (p.error) out.push(`<text class="small bad" x="${g.x + 10}" y="${g.y + 64}">${esc(shorten(p.error, 70))}</text>`);
  nd.pods.forEach((pod, i) => {
    const x = g.x + 6 + (i % g.cols) * (g.podW + layout.podGap);
    const y = g.y + layout.headH + Math.floor(i / g.cols) * (layout.podH + layout.podGap);
    out.push(drawPod(pod, x, y, g));
  });
  const hcY = g.y + layout.headH + Math.ceil(nd.pods.length / g.cols) * (layout.podH + layout.podGap) + 14;
  if (nd.healthChecks.length) out.push(`<text class="small" x="${g.x + 10}" y="${hcY}">health-check node ports, asked from the client:</text>`);
  nd.healthChecks.forEach((hc, i) => {
    const ok = hc.status === 200;
    out.push(`<text class="small" x="${g.x + 10}" y="${hcY + 16 * (i + 1)}" data-health="${esc(hc.service)}" data-status="${hc.status}">` +
      `<tspan class="${ok ? "ok" : "bad"}">●</tspan> ${esc(hc.service)} :${hc.port} → ${hc.status || "no answer"}, ${hc.localEndpoints} local</text>`);
  });
  out.push("</g>");
  return out.join("");
}

function drawPod(pod, x, y, g) {
  const key = pod.namespace + "/" + pod.name;
  const cls = ["pod", pod.terminating ? "terminating" : pod.ready ? "ready" : "notready"];
  if (g.endpointPods.has(key)) cls.push("selected");
  const barW = (g.podW - 40) * Math.min(1, pod.window / g.maxWindow);
  const chars = Math.floor((g.podW - 10) / 7.4);
  return `<g class="${cls.join(" ")}" data-pod="${esc(key)}" data-window="${pod.window}"><title>${esc(key)} ${esc(pod.ip)} ${esc(pod.phase)}</title>` +
    `<rect class="body" x="${x}" y="${y}" width="${g.podW}" height="${layout.podH}" rx="4"/>` +
    `<text x="${x + 5}" y="${y + 14}">${esc(shorten(pod.name, chars))}</text>` +
    `<text class="small" x="${x + 5}" y="${y + 27}">${esc(pod.ip || pod.phase)}${pod.terminating ? " · terminating" : ""}</text>` +
    `<rect class="bar" x="${x + 5}" y="${y + 31}" width="${barW}" height="5"/>` +
    `<text class="small count" x="${x + g.podW - 5}" y="${y + 37}" text-anchor="end">${pod.window}</text></g>`;
}

// selectedPods are the pods behind the selected Service.
function selectedPods(snap) {
  const svc = snap.services.find(s => s.namespace + "/" + s.name === page.selected);
  return new Set(svc ? svc.endpoints.map(e => e.pod).filter(Boolean) : []);
}

// --- the Services -----------------------------------------------------------

function drawServices(snap) {
  const eps = snap.services.flatMap(s => s.endpoints);
  const max = {window: Math.max(1, ...eps.map(e => e.window)), second: Math.max(1, ...eps.flatMap(e => e.recent))};
  patch(document.getElementById("services"), snap.services.map(s => [s.namespace + "/" + s.name, drawService(s, max)]), false);
}

function serviceAddresses(s) {
  const ports = s.ports.map(p => `${p.port}/${p.protocol}` + (p.nodePort ? ` nodePort ${p.nodePort}` : "")).join(", ");
  const parts = [`ClusterIP ${s.clusterIPs.join(", ") || "None"}`, ports];
  if (s.loadBalancerIPs.length) parts.push(`LB ${s.loadBalancerIPs.join(", ")}`);
  if (s.externalIPs.length) parts.push(`external ${s.externalIPs.join(", ")}`);
  return parts.join(" · ");
}

function drawService(s, max) {
  const key = s.namespace + "/" + s.name;
  let policy = `internalTrafficPolicy ${s.internalTrafficPolicy}`;
  if (s.externalTrafficPolicy) policy += ` · externalTrafficPolicy ${s.externalTrafficPolicy}`;
  if (s.healthCheckNodePort) policy += ` · healthCheckNodePort ${s.healthCheckNodePort}`;
  const rows = s.endpoints.map(e => drawEndpoint(e, max)).join("");
  return `<div class="svc${key === page.selected ? " selected" : ""}" data-service="${esc(key)}">` +
    `<h3>${esc(key)}<span class="type">${esc(s.type)}</span></h3>` +
    `<div class="addrs">${esc(serviceAddresses(s))}</div><div class="policy">${esc(policy)}</div>` +
    (rows ? `<table>${rows}</table>` : `<div class="none">no endpoints</div>`) + `</div>`;
}

function drawEndpoint(e, max) {
  const state = e.terminating ? "terminating" : e.ready ? "ready" : "notready";
  const spark = e.recent.map((n, i) => {
    const h = n ? Math.max(2, 14 * n / max.second) : 0;
    return `<rect x="${i * 3}" y="${14 - h}" width="2" height="${h}" fill="#2760d8"/>`;
  }).join("");
  return `<tr data-endpoint="${esc(e.key)}" data-window="${e.window}" data-total="${e.total}">` +
    `<td>${esc(e.key)}</td><td title="${esc(e.pod)}">${esc(e.node || "")}</td>` +
    `<td class="state-${state}">${state === "notready" ? "not ready" : state}</td>` +
    `<td class="barcell"><div class="ep-bar" style="width:${100 * e.window / max.window}%"></div></td>` +
    `<td class="count">${e.window}</td>` +
    `<td class="spark"><svg width="90" height="14" aria-label="per second">${spark}</svg></td></tr>`;
}

// --- the trace form --------------------------------------------------------

// setOptions replaces a select's options only when they changed, keeping
// the choice.
function setOptions(select, options) {
  const sig = options.map(o => o.value + "=" + o.label).join("\n");
  if (select.dataset.sig === sig) return;
  const keep = select.value;
  select.innerHTML = options.map(o => `<option value="${esc(o.value)}">${esc(o.label)}</option>`).join("");
  select.dataset.sig = sig;
  if (options.some(o => o.value === keep)) select.value = keep;
}

function sources(snap) {
  const out = [{value: "client", label: `client ${snap.clientIP}`}];
  for (const nd of snap.nodes) out.push({value: "node:" + nd.name, label: `${nd.name} itself ${nd.ip}`});
  for (const nd of snap.nodes) {
    for (const p of nd.pods) {
      if (p.ip) out.push({value: `pod:${p.namespace}/${p.name}`, label: `pod ${p.namespace}/${p.name} ${p.ip} (${nd.name})`});
    }
  }
  return out;
}

// destinations are every Service address: ClusterIPs, each node's
// NodePorts, load-balancer and external IPs.
function destinations(snap) {
  const out = [];
  const add = (s, what, ip, port, proto) => {
    const hostport = ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
    out.push({value: `${hostport}|${proto}`, label: `${s.namespace}/${s.name} ${what} ${hostport}/${proto}`});
  };
  for (const s of snap.services) {
    for (const p of s.ports) {
      for (const ip of s.clusterIPs) if (ip !== "None") add(s, "ClusterIP", ip, p.port, p.protocol);
      if (p.nodePort) for (const nd of snap.nodes) add(s, `NodePort on ${nd.name}`, nd.ip, p.nodePort, p.protocol);
      for (const ip of s.loadBalancerIPs) add(s, "LoadBalancer", ip, p.port, p.protocol);
      for (const ip of s.externalIPs) add(s, "externalIP", ip, p.port, p.protocol);
    }
  }
  return out;
}

function drawTraceForm(snap) {
  setOptions(document.getElementById("trace-src"), sources(snap));
  setOptions(document.getElementById("trace-dst"), destinations(snap));
  setOptions(document.getElementById("trace-via"), [{value: "", label: "as the load balancer routes"}]
    .concat(snap.nodes.map(nd => ({value: nd.name, label: nd.name}))));
  showVia();
}

// The client's packet to a node's address reaches that node; to any other
// address, the node the load balancer picks, or the one asked for.
function showVia() {
  const snap = page.snapshot;
  const src = document.getElementById("trace-src").value;
  const dst = document.getElementById("trace-dst").value.split("|")[0];
  const toNode = snap && snap.nodes.some(nd => dst.startsWith(nd.ip + ":"));
  document.getElementById("trace-via-label").hidden = !(src === "client" && !toNode);
}

async function trace(ev) {
  if (ev) ev.preventDefault();
  const [dst, proto] = document.getElementById("trace-dst").value.split("|");
  const q = new URLSearchParams({src: document.getElementById("trace-src").value, dst: dst || "", proto: proto || "TCP"});
  const via = document.getElementById("trace-via");
  if (!document.getElementById("trace-via-label").hidden && via.value) q.set("via", via.value);
  const out = document.getElementById("trace-result");
  out.innerHTML = `<p class="hint">tracing…</p>`;
  try {
    const resp = await fetch("/api/trace?" + q);
    const answer = await resp.json();
    out.innerHTML = answer.error ? `<p class="error" id="trace-error">${esc(answer.error)}</p>` : drawTrace(answer);
  } catch (err) {
    out.innerHTML = `<p class="error" id="trace-error">${esc(err)}</p>`;
  }
}

// --- a trace ---------------------------------------------------------------

// drawTrace draws the paths through the node's rules: the steps all paths
// share first, then one branch per path with its probability, the steps
// only it meets and its outcome, then the steps all paths meet last. A path
// whose outcome the plan does not allow is red, as are the verdicts when
// the kernel and the plan disagree.
function drawTrace(answer) {
  const r = answer.result;
  const paths = r.paths || [];
  const steps = paths.map(p => p.steps);
  const head = commonPrefix(steps);
  const tail = paths.length > 1 ? commonPrefix(steps.map(s => s.slice(head).reverse())) : 0;
  const out = [`<p class="trace-head">${esc(r.packet)}, through the ${esc(r.mode)} rules of <b>${esc(answer.node)}</b>:</p>`,
    `<div class="chain">`, drawSteps(paths.length ? paths[0].steps.slice(0, head) : []), `</div>`];
  if (paths.length > 1) out.push(`<div class="arrow">↓ ${paths.length} ways, one picked at random per connection</div>`);
  out.push(`<div class="branches">`);
  for (const p of paths) {
    const bad = !allowed(p, r.plan);
    const own = paths.length > 1 ? p.steps.slice(head, p.steps.length - tail) : p.steps.slice(head);
    out.push(`<div class="branch${bad ? " disagree" : ""}" data-path-action="${esc(p.action)}">` +
      (paths.length > 1 ? `<div class="prob">p = ${p.probability.toFixed(3)}</div>` : "") +
      `<div class="chain">${drawSteps(own)}</div><div class="arrow">⇒</div>` +
      `<span class="verdict ${esc(p.action)}">${esc(pathOutcome(p))}</span></div>`);
  }
  out.push(`</div>`);
  if (tail) {
    out.push(`<div class="arrow">↓ then, on every path:</div><div class="chain">${drawSteps(paths[0].steps.slice(-tail))}</div>`);
  }
  out.push(drawVerdicts(r));
  return out.join("");
}

// commonPrefix is how many first elements all the lists share.
function commonPrefix(lists) {
  if (lists.length < 2) return lists.length ? lists[0].length : 0;
  let n = 0;
  while (lists.every(l => n < l.length && l[n] === lists[0][n])) n++;
  return n;
}

// drawSteps draws rules as boxes; a map element the rule looked up
// (a step starting with "@") goes inside its rule's box.
function drawSteps(steps) {
  const boxes = [];
  for (const step of steps) {
    const s = step.trim();
    if (s.startsWith("@") && boxes.length) {
      boxes[boxes.length - 1] += `<span class="elem">${esc(s)}</span>`;
      continue;
    }
    const i = s.indexOf(": ");
    boxes.push(i < 0 ? esc(s) : `<span class="chain-name">${esc(s.slice(0, i))}</span>: ${esc(s.slice(i + 2))}`);
  }
  return boxes.map(b => `<div class="step">${b}</div>`).join(`<div class="arrow">↓</div>`);
}

function pathOutcome(p) {
  let s = p.action + (p.endpoint ? " to " + p.endpoint : "");
  if (p.masquerade) s += ", masqueraded";
  if (p.affinitySeconds) s += `, client pinned ${p.affinitySeconds}s`;
  return s;
}

// allowed: the plan would take this path too.
function allowed(p, plan) {
  if (p.action !== plan.action) return false;
  return !p.endpoint || (plan.endpoints || []).includes(p.endpoint);
}

function verdictWords(v) {
  let s = v.action + (v.service ? ` (${v.service})` : "");
  if (v.endpoints && v.endpoints.length) s += ` to one of ${v.endpoints.length}: ${v.endpoints.join(", ")}`;
  if (v.masqueraded && v.masqueraded.length) s += `; masqueraded to ${v.masqueraded.join(", ")}`;
  return s;
}

function drawVerdicts(r) {
  const disagree = (r.problems || []).length > 0;
  const rows = [
    `<tr><td>kernel</td><td id="trace-verdict" data-action="${esc(r.kernel.action)}" class="${disagree ? "disagree" : ""}">` +
      `<span class="verdict ${esc(r.kernel.action)}">${esc(verdictWords(r.kernel))}</span></td></tr>`,
    `<tr><td>plan</td><td id="trace-plan" data-action="${esc(r.plan.action)}"><span class="verdict ${esc(r.plan.action)}">${esc(verdictWords(r.plan))}</span></td></tr>`,
  ];
  if (r.plan.reason) rows.push(`<tr><td>why</td><td>${esc(r.plan.reason)}</td></tr>`);
  const problems = disagree ? `<p class="problems" id="trace-problems">the kernel's rules disagree with the plan: ${esc(r.problems.join("; "))}</p>` : "";
  return `<table class="summary">${rows.join("")}</table>${problems}`;
}

// --- live updates ----------------------------------------------------------

function draw(snap) {
  const start = performance.now();
  page.snapshot = snap;
  document.getElementById("lab").textContent = snap.lab;
  document.getElementById("mode").textContent = `proxy mode ${snap.mode} · ${snap.nodes.length} nodes · ${snap.services.length} Services`;
  document.querySelectorAll(".window").forEach(el => { el.textContent = snap.window; });
  drawCluster(snap);
  drawServices(snap);
  drawTraceForm(snap);
  page.draws++;
  page.lastDrawMs = performance.now() - start;
  if (page.draws === 1) {
    page.firstDrawMs = page.lastDrawMs;
    // The mark goes after the next frame, once the browser has laid out
    // and painted the drawing.
    requestAnimationFrame(() => setTimeout(() => performance.mark("svcproxy-first-draw")));
  }
  const live = document.getElementById("live");
  live.textContent = "live · " + new Date(snap.at).toLocaleTimeString();
  live.className = "";
}

function connect() {
  const events = new EventSource("/api/events");
  events.onmessage = ev => draw(JSON.parse(ev.data));
  events.onerror = () => {
    const live = document.getElementById("live");
    live.textContent = "disconnected: is the lab up? (retrying)";
    live.className = "stale";
  };
}

document.getElementById("services").addEventListener("click", ev => {
  const card = ev.target.closest(".svc");
  if (!card) return;
  page.selected = page.selected === card.dataset.service ? "" : card.dataset.service;
  if (page.snapshot) draw(page.snapshot);
});
document.getElementById("trace-form").addEventListener("submit", trace);
document.getElementById("trace-src").addEventListener("change", showVia);
document.getElementById("trace-dst").addEventListener("change", showVia);
window.addEventListener("resize", () => { if (page.snapshot) drawCluster(page.snapshot); });
connect();
