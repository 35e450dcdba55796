// The corral dashboard: a client of the same JSON API and event stream as the CLI. Hand-written,
// no dependencies, no build step. State lives in the daemon; this page only shows it and asks.

const $ = (sel, el = document) => el.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};

let role = 'full';
let units = [];
/** CPU history per unit (percent), newest last: the sparkline. */
const history = new Map();
const HISTORY = 60;

async function api(method, path) {
  const r = await fetch(path, { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' });
  let body = {};
  try { body = await r.json(); } catch { /* not JSON */ }
  if (!r.ok) throw new Error(body.message || `${method} ${path}: ${r.status}`);
  return body;
}

function duration(secs) {
  if (secs == null) return '';
  const s = Math.floor(secs);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
}

function bytes(n) {
  if (n == null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function stateText(u) {
  return u.state === 'running' && !u.ready ? 'running (not ready)' : u.state;
}

function why(u) {
  if (u.waiting_on && u.waiting_on.length) {
    return 'waits on ' + u.waiting_on.map((d) => `${d.name} (${d.condition})`).join(', ');
  }
  if (u.reason) return u.reason.message;
  return '';
}

function sparkline(values) {
  const w = 60, h = 16;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', w);
  svg.setAttribute('height', h);
  svg.setAttribute('aria-hidden', 'true');
  if (values.length > 1) {
    const max = Math.max(5, ...values);
    const pts = values.map((v, i) => `${(i * w / (HISTORY - 1)).toFixed(1)},${(h - 1 - v / max * (h - 2)).toFixed(1)}`);
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', pts.join(' '));
    svg.append(line);
  }
  return svg;
}

let outcomeTimer;
function outcome(text, bad = false) {
  const o = $('#outcome');
  o.textContent = text;
  o.className = bad ? 'bad' : '';
  clearTimeout(outcomeTimer);
  outcomeTimer = setTimeout(() => { o.textContent = ''; }, 8000);
}

/** Ask the daemon to act on a unit and wait for the outcome (the API's `wait=true`). */
async function act(verb, name, confirmText) {
  if (confirmText && !window.confirm(confirmText)) return;
  outcome(`${verb} ${name}…`);
  try {
    const r = await api('POST', `/v1/services/${encodeURIComponent(name)}/${verb}?wait=true&timeout=60s`);
    outcome(r.message || `${verb} ${name}: done`);
  } catch (e) {
    outcome(`${verb} ${name}: ${e.message}`, true);
  }
  refresh();
}

async function signal(name) {
  const sig = window.prompt(`Signal to send to ${name} (e.g. HUP, USR1, TERM):`, 'HUP');
  if (!sig) return;
  try {
    const r = await api('POST', `/v1/services/${encodeURIComponent(name)}/signal?signal=${encodeURIComponent(sig)}`);
    outcome(r.message);
  } catch (e) {
    outcome(`signal ${name}: ${e.message}`, true);
  }
}

function actions(u) {
  if (role !== 'full' || u.kind === 'target') return el('td', { class: 'act-col' });
  const live = ['running', 'starting', 'backoff', 'blocked', 'stopping'].includes(u.state);
  const td = el('td', { class: 'act-col' });
  if (!live) {
    td.append(el('button', { class: 'act', 'aria-label': `Start ${u.name}`, onclick: () => act('start', u.name) }, 'start'));
  } else {
    td.append(
      el('button', { class: 'act', 'aria-label': `Restart ${u.name}`, onclick: () => act('restart', u.name, `Restart ${u.name}?`) }, 'restart'),
      ' ',
      el('button', { class: 'act danger', 'aria-label': `Stop ${u.name}`, onclick: () => act('stop', u.name, `Stop ${u.name}? Its dependents keep running.`) }, 'stop'),
    );
    if (u.pid) {
      td.append(' ', el('button', { class: 'act', 'aria-label': `Send a signal to ${u.name}`, onclick: () => signal(u.name) }, 'signal'));
    }
  }
  return td;
}

/** The cells of a unit's row, in column order (the last is its actions). */
function cells(u) {
  const state = el('span', { class: `state s-${u.state}${u.ready ? ' ready' : ''}` }, stateText(u));
  const w = why(u);
  const stateCell = el('td', {}, state);
  if (w) stateCell.append(el('div', { class: 'why' }, w));
  const ports = el('td');
  for (const p of u.ports || []) {
    ports.append(el('a', { href: `http://127.0.0.1:${p}/`, target: '_blank', rel: 'noopener' }, String(p)), ' ');
  }
  const usage = u.usage;
  const cpu = el('td');
  if (usage) cpu.append(sparkline(history.get(u.name) || []), ` ${usage.cpu_percent.toFixed(1)}%`);
  return [
    el('td', { class: 'name' }, el('button', { 'aria-label': `Show the logs of ${u.name}`, onclick: () => showLogs(u.name) }, u.name)),
    el('td', {}, u.kind),
    stateCell,
    el('td', {}, u.health || ''),
    el('td', {}, u.pid ? String(u.pid) : ''),
    el('td', {}, duration(u.uptime_secs)),
    el('td', {}, String(u.restarts)),
    ports,
    cpu,
    el('td', {}, usage ? bytes(usage.rss_bytes) : ''),
    actions(u),
  ];
}

/** Update the table in place: a cell is replaced only when what it shows changed, so a button
 * under the pointer or with the keyboard focus stays the same element. */
function render() {
  const tbody = $('#units tbody');
  const rows = new Map([...tbody.children].map((tr) => [tr.dataset.unit, tr]));
  const wanted = [];
  for (const u of units) {
    let tr = rows.get(u.name);
    const fresh = cells(u);
    if (!tr) {
      tr = el('tr', { 'data-unit': u.name }, ...fresh);
    } else {
      fresh.forEach((td, i) => {
        const old = tr.children[i];
        if (!old || old.outerHTML !== td.outerHTML) {
          if (old) old.replaceWith(td); else tr.append(td);
        }
      });
    }
    tr.dataset.state = u.state;
    wanted.push(tr);
  }
  // Order as the daemon lists them; rows of units that are gone go.
  wanted.forEach((tr, i) => { if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null); });
  while (tbody.children.length > wanted.length) tbody.lastChild.remove();
  renderGraph();
}

/** The dependency graph: units in layers by depth (a unit sits right of what it needs). */
function renderGraph() {
  const ns = 'http://www.w3.org/2000/svg';
  const byName = new Map(units.map((u) => [u.name, u]));
  const depth = new Map();
  const depthOf = (name, seen = new Set()) => {
    if (depth.has(name)) return depth.get(name);
    if (seen.has(name)) return 0;
    seen.add(name);
    const u = byName.get(name);
    const d = u && u.depends_on.length ? 1 + Math.max(...u.depends_on.map((x) => depthOf(x.name, seen))) : 0;
    depth.set(name, d);
    return d;
  };
  units.forEach((u) => depthOf(u.name));
  const layers = [];
  for (const u of units) (layers[depth.get(u.name)] ||= []).push(u.name);
  const W = 150, H = 30, GX = 70, GY = 16;
  const pos = new Map();
  layers.forEach((names, x) => names.forEach((n, y) => pos.set(n, [x * (W + GX) + 10, y * (H + GY) + 10])));
  const width = layers.length * (W + GX) + 20;
  const height = Math.max(...layers.map((l) => l.length), 1) * (H + GY) + 20;
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'Dependency graph');
  for (const u of units) {
    for (const d of u.depends_on) {
      if (!pos.has(d.name)) continue;
      const [x1, y1] = pos.get(d.name);
      const [x2, y2] = pos.get(u.name);
      const blocked = (u.waiting_on || []).some((w) => w.name === d.name);
      const path = document.createElementNS(ns, 'path');
      const ax = x1 + W, ay = y1 + H / 2, bx = x2, by = y2 + H / 2;
      path.setAttribute('d', `M${ax},${ay} C${ax + GX / 2},${ay} ${bx - GX / 2},${by} ${bx},${by}`);
      path.setAttribute('class', `edge${blocked ? ' blocked' : ''}`);
      svg.append(path);
      if (blocked) {
        const t = document.createElementNS(ns, 'text');
        t.setAttribute('x', (ax + bx) / 2);
        t.setAttribute('y', (ay + by) / 2 - 3);
        t.setAttribute('class', 'cond');
        t.setAttribute('text-anchor', 'middle');
        t.textContent = d.condition;
        svg.append(t);
      }
    }
  }
  for (const u of units) {
    const [x, y] = pos.get(u.name);
    const g = document.createElementNS(ns, 'g');
    const ok = u.state === 'running' && u.ready || u.state === 'completed';
    const bad = u.state === 'failed' || u.state === 'skipped';
    g.setAttribute('class', `node ${ok ? 'ok' : bad ? 'bad' : u.state === 'blocked' ? 'wait' : ''}`);
    g.setAttribute('data-unit', u.name);
    const r = document.createElementNS(ns, 'rect');
    r.setAttribute('x', x); r.setAttribute('y', y); r.setAttribute('width', W); r.setAttribute('height', H);
    const t = document.createElementNS(ns, 'text');
    t.setAttribute('x', x + 8); t.setAttribute('y', y + H / 2 + 4);
    t.textContent = `${u.name} · ${stateText(u)}`;
    g.append(r, t);
    svg.append(g);
  }
  $('#graph').replaceChildren(svg);
}

let refreshing = false, again = false;
/** Fetch the units (coalesced: a burst of events is one fetch). */
async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    units = await api('GET', '/v1/services?metrics=true');
    for (const u of units) {
      const h = history.get(u.name) || [];
      if (u.usage) { h.push(u.usage.cpu_percent); if (h.length > HISTORY) h.shift(); }
      history.set(u.name, h);
    }
    render();
  } catch (e) {
    outcome(e.message, true);
  } finally {
    refreshing = false;
    if (again) { again = false; refresh(); }
  }
}

/** Live: every event (a change made anywhere) refreshes; a lost stream is shown and retried. */
function connect() {
  const link = $('#link');
  const es = new EventSource('/v1/events');
  es.addEventListener('open', () => { link.textContent = 'live'; link.className = 'link'; refresh(); });
  es.addEventListener('event', () => refresh());
  es.addEventListener('lagged', () => refresh());
  es.addEventListener('error', () => { link.textContent = 'connection lost; retrying…'; link.className = 'link down'; });
}

let logStream;
function showLogs(name) {
  if (logStream) logStream.close();
  $('#logs-section').hidden = false;
  $('#logs-name').textContent = name;
  const pre = $('#logs');
  pre.replaceChildren();
  logStream = new EventSource(`/v1/services/${encodeURIComponent(name)}/logs?tail=200&follow=true`);
  logStream.addEventListener('line', (ev) => {
    const l = JSON.parse(ev.data);
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(el('div', { class: l.stream === 'err' ? 'err' : '' }, l.text));
    while (pre.childElementCount > 2000) pre.firstChild.remove();
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  });
}

async function main() {
  try {
    role = (await api('GET', '/v1/session')).role;
    const p = await api('GET', '/v1/project');
    $('#project').textContent = p.file;
  } catch (e) {
    outcome(e.message, true);
  }
  $('#role').textContent = role === 'full' ? '' : 'read-only';
  for (const id of ['#start-all', '#stop-all']) $(id).hidden = role !== 'full';
  $('#start-all').addEventListener('click', async () => {
    for (const u of units.filter((u) => u.kind !== 'target' && !['running', 'starting'].includes(u.state))) {
      await act('start', u.name);
    }
  });
  $('#stop-all').addEventListener('click', async () => {
    if (!window.confirm('Stop every unit?')) return;
    for (const u of [...units].reverse().filter((u) => u.kind !== 'target')) {
      if (['running', 'starting', 'backoff', 'blocked'].includes(u.state)) await act('stop', u.name);
    }
  });
  $('#logs-close').addEventListener('click', () => {
    if (logStream) logStream.close();
    $('#logs-section').hidden = true;
  });
  connect();
  await refresh();
  // CPU and memory move without events: a slow poll keeps the sparklines going.
  setInterval(refresh, 5000);
}

main();
