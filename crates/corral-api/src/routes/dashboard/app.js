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
    el('td', { class: 'health', title: u.health || '' }, u.health || ''),
    el('td', {}, u.pid ? String(u.pid) : ''),
    el('td', {}, duration(u.uptime_secs)),
    el('td', {}, String(u.restarts)),
    ports,
    cpu,
    el('td', {}, usage ? bytes(usage.rss_bytes) : ''),
    actions(u),
  ];
}

/** Rows near the viewport (and their units' names): only these are filled in. A page with
 * hundreds of units keeps every row (so order, scrolling and find-in-page by name work), but
 * builds and updates the cells of the ones that can be seen. */
const seen = new Set();
const rowObserver = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const tr = e.target;
    if (e.isIntersecting) { seen.add(tr.dataset.unit); fillRow(tr); } else seen.delete(tr.dataset.unit);
  }
}, { rootMargin: '400px 0px' });

/** Fill a row's cells from its unit: a cell is replaced only when what it shows changed, so a
 * button under the pointer or with the keyboard focus stays the same element. */
function fillRow(tr) {
  const u = tr.unit;
  // A row whose unit (and CPU history) did not change is left as it is.
  const sig = JSON.stringify(u) + (history.get(u.name) || []).length + role;
  if (tr.sig === sig) return;
  const fresh = cells(u);
  fresh.forEach((td, i) => {
    const old = tr.children[i];
    if (!old || old.outerHTML !== td.outerHTML) {
      if (old) old.replaceWith(td); else tr.append(td);
    }
  });
  tr.classList.remove('pending');
  tr.sig = sig;
}

/** Update the table: one row per unit in the daemon's order; a row out of sight holds only
 * its unit's name until it scrolls into view. */
function render() {
  const tbody = $('#units tbody');
  const rows = new Map([...tbody.children].map((tr) => [tr.dataset.unit, tr]));
  const wanted = [];
  for (const u of units) {
    let tr = rows.get(u.name);
    if (!tr) {
      tr = el('tr', { 'data-unit': u.name, class: 'pending' }, el('td', { class: 'name' }, u.name));
      rowObserver.observe(tr);
    }
    tr.unit = u;
    // Cheap, and kept for every row: what CSS and watchers key on.
    tr.dataset.state = u.state;
    if (seen.has(u.name)) fillRow(tr);
    wanted.push(tr);
  }
  // Order as the daemon lists them; rows of units that are gone go.
  wanted.forEach((tr, i) => { if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null); });
  while (tbody.children.length > wanted.length) {
    const gone = tbody.lastChild;
    rowObserver.unobserve(gone);
    seen.delete(gone.dataset.unit);
    gone.remove();
  }
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
  const W = 210, H = 30, GX = 60, GY = 16;
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

// ---- a unit's logs: follow, pause, a regex filter with highlight; and its `why` ----

let logStream;
let logLines = [];
const MAX_LINES = 5000;

function logFilter() {
  const src = $('#logs-filter').value;
  if (!src) return null;
  try { return new RegExp(src, 'g'); } catch { return undefined; }
}

/** One line as a DOM node, the filter's matches marked. */
function lineNode(l, re) {
  const div = el('div', { class: l.stream === 'err' ? 'err' : 'out', 'data-stream': l.stream });
  if (!re) { div.textContent = l.text; return div; }
  let last = 0;
  // `matchAll` starts where the regex's last `test` left off: from the start, always.
  re.lastIndex = 0;
  for (const m of l.text.matchAll(re)) {
    if (m[0] === '') break;
    div.append(l.text.slice(last, m.index), el('mark', {}, m[0]));
    last = m.index + m[0].length;
  }
  div.append(l.text.slice(last));
  return div;
}

function renderLogs() {
  const pre = $('#logs');
  const re = logFilter();
  if (re === undefined) { $('#logs-count').textContent = 'not a regex'; return; }
  const shown = re ? logLines.filter((l) => { re.lastIndex = 0; return re.test(l.text); }) : logLines;
  pre.replaceChildren(...shown.slice(-2000).map((l) => lineNode(l, re)));
  $('#logs-count').textContent = `${shown.length} of ${logLines.length} lines`;
  if (!$('#logs-pause').checked) pre.scrollTop = pre.scrollHeight;
}

function showLogs(name) {
  if (logStream) logStream.close();
  logLines = [];
  $('#logs-section').hidden = false;
  $('#logs-name').textContent = name;
  const u = units.find((x) => x.name === name);
  $('#logs-why').textContent = u ? explain(u) : '';
  $('#logs-def').replaceChildren();
  api('GET', `/v1/services/${encodeURIComponent(name)}/definition`).then((d) => {
    $('#logs-def-source').textContent = d.source;
    $('#logs-def').replaceChildren(...d.fields.flatMap((f) => [el('dt', {}, f.key), el('dd', {}, f.value)]));
  }).catch((e) => { $('#logs-def-source').textContent = e.message; });
  renderLogs();
  const since = $('#logs-since').value;
  const from = since ? `since=${encodeURIComponent(since)}` : 'tail=200';
  logStream = new EventSource(`/v1/services/${encodeURIComponent(name)}/logs?${from}&follow=true`);
  // Its recent events, from the history.
  api('GET', '/v1/events/history?limit=1000').then((all) => {
    const mine = all.filter((e) => e.unit === name).slice(-20).reverse();
    $('#logs-events').replaceChildren(...mine.map((e) =>
      el('li', {}, `${new Date(e.time_ms).toLocaleTimeString()} ${e.kind}: ${e.message}`)));
  }).catch(() => {});
  logStream.addEventListener('line', (ev) => {
    const l = JSON.parse(ev.data);
    logLines.push(l);
    if (logLines.length > MAX_LINES) logLines.shift();
    if ($('#logs-pause').checked) { $('#logs-count').textContent = `paused; ${logLines.length} lines`; return; }
    const re = logFilter();
    if (re === undefined) return;
    if (re) { re.lastIndex = 0; if (!re.test(l.text)) return; }
    const pre = $('#logs');
    pre.append(lineNode(l, re));
    while (pre.childElementCount > 2000) pre.firstChild.remove();
    pre.scrollTop = pre.scrollHeight;
  });
  $('#logs-section').scrollIntoView({ block: 'nearest' });
}

/** What `corral why` says: the state, why, what it needs. */
function explain(u) {
  const parts = [`${u.name} is ${stateText(u)}`];
  if (u.reason) parts.push(`because: ${u.reason.message}`);
  for (const d of u.depends_on || []) {
    const dep = units.find((x) => x.name === d.name);
    parts.push(`needs ${d.name} (${d.condition}): ${dep ? stateText(dep) : 'unknown'}`);
  }
  if (u.held) parts.push(`stopped by the user; start brings it back`);
  return parts.join(' · ');
}

// ---- instances ----

let templates = [];
let instances = [];

async function loadTemplates() {
  templates = await api('GET', '/v1/templates');
  const sel = $('#tpl');
  sel.replaceChildren(...templates.map((t) => el('option', { value: t.name }, t.name)));
  renderParams();
  $('#new-instance').hidden = templates.length === 0 || role !== 'full';
}

function renderParams() {
  const t = templates.find((x) => x.name === $('#tpl').value);
  const box = $('#tpl-params');
  box.replaceChildren(...Object.entries(t ? t.params : {}).map(([k, v]) =>
    el('label', {}, `${k} `, el('input', { type: 'text', name: k, value: v, 'aria-label': `Parameter ${k}` }))));
}

function uploadZip(name, file) {
  return new Promise((resolve, reject) => {
    const bar = $('#upload');
    bar.hidden = false;
    bar.value = 0;
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', `/v1/instances/${encodeURIComponent(name)}/workspace`);
    xhr.setRequestHeader('Content-Type', 'application/zip');
    xhr.upload.addEventListener('progress', (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; });
    xhr.addEventListener('load', () => {
      bar.hidden = true;
      if (xhr.status < 300) resolve(); else {
        let msg = `${xhr.status}`;
        try { msg = JSON.parse(xhr.responseText).message; } catch { /* not JSON */ }
        reject(new Error(msg));
      }
    });
    xhr.addEventListener('error', () => { bar.hidden = true; reject(new Error('upload failed')); });
    xhr.send(file);
  });
}

async function createInstance(ev) {
  ev.preventDefault();
  const body = { template: $('#tpl').value, params: {} };
  for (const i of $('#tpl-params').querySelectorAll('input')) body.params[i.name] = i.value;
  const src = $('#new-instance').querySelector('input[name=src]:checked').value;
  const file = $('#src-zip').files[0];
  if (src === 'git') body.git = $('#src-git').value;
  if (src === 'zip') {
    if (!file) { outcome('choose a ZIP file first', true); return; }
    body.upload = true;
  }
  try {
    const r = await fetch('/v1/instances', { method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body: JSON.stringify(body) });
    const inst = await r.json();
    if (!r.ok) throw new Error(inst.message || r.status);
    if (src === 'zip') await uploadZip(inst.name, file);
    outcome(`instance ${inst.name} created`);
  } catch (e) {
    outcome(`create: ${e.message}`, true);
  }
  refreshInstances();
}

async function deleteInstance(name) {
  if (!window.confirm(`Delete ${name}, its workspace and its logs?`)) return;
  try {
    const r = await api('DELETE', `/v1/instances/${encodeURIComponent(name)}`);
    outcome(r.message || `${name} deleted`);
  } catch (e) {
    outcome(`delete ${name}: ${e.message}`, true);
  }
  refreshInstances();
}

function renderInstances() {
  const tbody = $('#instances tbody');
  tbody.replaceChildren(...instances.map((i) => {
    const done = i.steps.filter((s) => s.state === 'done').length;
    const running = i.steps.find((s) => s.state === 'running');
    const steps = `${done}/${i.steps.length}${running ? ` · ${running.name}` : ''}${i.error ? ` · ${i.error}` : ''}`;
    const acts = el('td', { class: 'act-col' });
    if (role === 'full') {
      const u = units.find((x) => x.name === i.name);
      const live = u && ['running', 'starting', 'backoff', 'blocked'].includes(u.state);
      if (u && !live) acts.append(el('button', { class: 'act', 'aria-label': `Start ${i.name}`, onclick: () => act('start', i.name) }, 'start'), ' ');
      if (live) acts.append(el('button', { class: 'act', 'aria-label': `Restart ${i.name}`, onclick: () => act('restart', i.name, `Restart ${i.name}?`) }, 'restart'), ' ',
        el('button', { class: 'act danger', 'aria-label': `Stop ${i.name}`, onclick: () => act('stop', i.name, `Stop ${i.name}?`) }, 'stop'), ' ');
      acts.append(el('button', { class: 'act danger', 'aria-label': `Delete ${i.name}`, onclick: () => deleteInstance(i.name) }, 'delete'));
    }
    return el('tr', { 'data-instance': i.name, 'data-state': i.state },
      el('td', {}, i.name), el('td', {}, i.template),
      el('td', {}, el('span', { class: `state s-${i.state === 'ready' ? 'running ready' : i.state === 'failed' ? 'failed' : 'starting'}` }, i.state)),
      el('td', { class: 'steps' }, steps),
      el('td', {}, el('a', { href: `http://127.0.0.1:${i.port}/`, target: '_blank', rel: 'noopener', 'aria-label': `Open ${i.name}` }, String(i.port))),
      el('td', {}, i.source), acts);
  }));
}

async function refreshInstances() {
  try { instances = await api('GET', '/v1/instances'); renderInstances(); } catch (e) { outcome(e.message, true); }
}

// ---- ad-hoc processes ----

let procs = [];
let procStream;

async function runProc(ev) {
  ev.preventDefault();
  const raw = $('#proc-cmd').value.trim();
  if (!raw) return;
  let command = raw;
  if (raw.startsWith('[')) {
    try { command = JSON.parse(raw); } catch { outcome('the command is not a JSON list', true); return; }
  }
  const body = { command };
  if ($('#proc-cwd').value) body.cwd = $('#proc-cwd').value;
  const env = $('#proc-env').value.trim();
  if (env) body.env = Object.fromEntries(env.split(/\s+/).map((kv) => { const i = kv.indexOf('='); return [kv.slice(0, i), kv.slice(i + 1)]; }));
  try {
    const r = await fetch('/v1/procs', { method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body: JSON.stringify(body) });
    const p = await r.json();
    if (!r.ok) throw new Error(p.message || r.status);
    outcome(`process ${p.id} started (pid ${p.pid})`);
    showProc(p.id);
  } catch (e) {
    outcome(`run: ${e.message}`, true);
  }
  refreshProcs();
}

function showProc(id) {
  if (procStream) procStream.close();
  $('#proc-section').hidden = false;
  $('#proc-name').textContent = id;
  const pre = $('#proc-output');
  pre.replaceChildren();
  procStream = new EventSource(`/v1/procs/${encodeURIComponent(id)}/output`);
  procStream.addEventListener('line', (ev) => { const l = JSON.parse(ev.data); pre.append(lineNode(l, null)); });
  procStream.addEventListener('omitted', (ev) => { const o = JSON.parse(ev.data); pre.append(el('div', { class: 'muted' }, `… ${o.bytes ?? ''} bytes omitted …`)); });
  procStream.addEventListener('exit', () => { procStream.close(); refreshProcs(); });
}

async function procAction(id, what) {
  try {
    if (what === 'signal') {
      const sig = window.prompt(`Signal to send to ${id}:`, 'TERM');
      if (!sig) return;
      await api('POST', `/v1/procs/${encodeURIComponent(id)}/signal?signal=${encodeURIComponent(sig)}`);
    } else if (what === 'input') {
      const text = window.prompt(`A line for ${id}'s stdin:`);
      if (text == null) return;
      await fetch(`/v1/procs/${encodeURIComponent(id)}/input`, { method: 'POST', credentials: 'same-origin', body: text + '\n' });
    } else if (what === 'remove') {
      await api('DELETE', `/v1/procs/${encodeURIComponent(id)}`);
    }
  } catch (e) {
    outcome(`${what} ${id}: ${e.message}`, true);
  }
  refreshProcs();
}

function renderProcs() {
  $('#procs tbody').replaceChildren(...procs.map((p) => {
    const exit = p.state === 'running' ? '' : p.exit_code != null ? `exit ${p.exit_code}` : p.signal != null ? `signal ${p.signal}` : '';
    const o = p.output || {};
    const acts = el('td', { class: 'act-col' },
      el('button', { class: 'act', 'aria-label': `Output of ${p.id}`, onclick: () => showProc(p.id) }, 'output'));
    if (role === 'full' && p.state === 'running') {
      acts.append(' ', el('button', { class: 'act', 'aria-label': `Input to ${p.id}`, onclick: () => procAction(p.id, 'input') }, 'input'),
        ' ', el('button', { class: 'act', 'aria-label': `Signal ${p.id}`, onclick: () => procAction(p.id, 'signal') }, 'signal'));
    }
    if (role === 'full' && p.state !== 'running') acts.append(' ', el('button', { class: 'act', 'aria-label': `Remove ${p.id}`, onclick: () => procAction(p.id, 'remove') }, 'remove'));
    return el('tr', { 'data-proc': p.id, 'data-state': p.state },
      el('td', {}, p.id), el('td', {}, p.command), el('td', {}, p.state), el('td', {}, exit),
      el('td', { class: 'steps' }, `${bytes(o.retained_bytes)} kept${o.omitted_bytes ? `, ${bytes(o.omitted_bytes)} omitted` : ''}`), acts);
  }));
}

async function refreshProcs() {
  try { procs = await api('GET', '/v1/procs'); renderProcs(); } catch (e) { outcome(e.message, true); }
}

// ---- tasks: a pipeline run, its verdicts filling in ----

let run = null;

function renderRunForm() {
  const box = $('#run-tasks');
  const tasks = units.filter((u) => u.kind === 'task').map((u) => u.name);
  const have = [...box.querySelectorAll('input')].map((i) => i.value);
  if (have.join() === tasks.join()) return;
  box.replaceChildren(el('legend', {}, 'tasks (none chosen: every task)'),
    ...tasks.map((t) => el('label', {}, el('input', { type: 'checkbox', value: t, 'aria-label': `Task ${t}` }), ` ${t} `)));
}

function renderRun() {
  if (!run) return;
  const secs = (s) => (s == null ? '' : `${s.toFixed(2)}s`);
  $('#run-summary').textContent = `run ${run.id}: ${run.state}, ${secs(run.elapsed_secs)}${run.sequential ? ', one at a time' : ''}`;
  $('#run tbody').replaceChildren(...run.tasks.map((t) => el('tr', { 'data-task': t.name, 'data-verdict': t.verdict },
    el('td', {}, t.name), el('td', { class: `v-${t.verdict}` }, t.verdict), el('td', {}, secs(t.duration_secs)), el('td', { class: 'why' }, t.detail || ''))));
}

async function refreshRun() {
  if (!run) return;
  try { run = await api('GET', `/v1/runs/${run.id}`); renderRun(); } catch (e) { outcome(e.message, true); }
}

async function startRun(ev) {
  ev.preventDefault();
  const tasks = [...$('#run-tasks').querySelectorAll('input:checked')].map((i) => i.value);
  const body = { sequential: $('#run-sequential').checked };
  if (tasks.length) body.tasks = tasks;
  try {
    const r = await fetch('/v1/runs', { method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body: JSON.stringify(body) });
    const b = await r.json();
    if (!r.ok) throw new Error(b.message || r.status);
    run = b;
    renderRun();
  } catch (e) {
    outcome(`run: ${e.message}`, true);
  }
}

// ---- events ----

let events = [];

function renderEvents() {
  const unit = $('#ev-unit').value, kind = $('#ev-kind').value;
  for (const [sel, key] of [['#ev-unit', 'unit'], ['#ev-kind', 'kind']]) {
    const s = $(sel);
    const have = new Set([...s.options].map((o) => o.value));
    for (const v of new Set(events.map((e) => e[key]))) if (!have.has(v)) s.append(el('option', { value: v }, v));
  }
  const shown = events.filter((e) => (!unit || e.unit === unit) && (!kind || e.kind === kind)).slice(-500).reverse();
  $('#events tbody').replaceChildren(...shown.map((e) => el('tr', {},
    el('td', {}, new Date(e.time_ms).toLocaleTimeString()), el('td', {}, e.unit), el('td', {}, e.kind), el('td', { class: 'why' }, e.message))));
}

async function loadEvents() {
  try { events = await api('GET', '/v1/events/history?limit=1000'); renderEvents(); } catch (e) { outcome(e.message, true); }
}

// ---- views ----

function showView() {
  const view = (location.hash || '#units').slice(1);
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== `view-${view}`;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (view === 'instances') { loadTemplates().catch((e) => outcome(e.message, true)); refreshInstances(); }
  if (view === 'procs') refreshProcs();
  if (view === 'events') loadEvents();
  if (view === 'tasks') { renderRunForm(); refreshRun(); }
}

/** Live: every event refreshes what it is about; a lost stream is shown and retried. */
function connect() {
  const link = $('#link');
  const es = new EventSource('/v1/events');
  es.addEventListener('open', () => { link.textContent = 'live'; link.className = 'link'; refresh(); });
  es.addEventListener('event', (ev) => {
    const e = JSON.parse(ev.data);
    // The event carries the unit's new state: shown at once, the full row follows.
    const u = e.state && units.find((x) => x.name === e.unit);
    if (u && u.state !== e.state) {
      u.state = e.state;
      if (e.state !== 'running') u.ready = false;
      // Only that row's state cell, now; the rest comes with the fetch.
      const tr = document.querySelector(`#units tr[data-unit="${CSS.escape(u.name)}"]`);
      if (tr) {
        tr.dataset.state = u.state;
        tr.sig = '';
        if (tr.children[2]) tr.children[2].replaceChildren(el('span', { class: `state s-${u.state}` }, stateText(u)));
      }
    }
    refresh();
    if (run && run.state === 'running') refreshRun();
    if (e.kind === 'instance' || e.instance) refreshInstances();
    if (e.kind === 'proc') refreshProcs();
    events.push(e);
    if (!$('#view-events').hidden) renderEvents();
  });
  es.addEventListener('lagged', () => { refresh(); refreshInstances(); });
  es.addEventListener('error', () => { link.textContent = 'connection lost; retrying…'; link.className = 'link down'; });
}

async function main() {
  try {
    role = (await api('GET', '/v1/session')).role;
    const p = await api('GET', '/v1/project');
    $('#project').textContent = p.file;
  } catch (e) {
    outcome(e.message, true);
  }
  document.body.dataset.role = role;
  $('#role').textContent = role === 'full' ? '' : 'read-only';
  for (const id of ['#start-all', '#stop-all', '#new-proc', '#new-run']) $(id).hidden = role !== 'full';
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
  $('#logs-filter').addEventListener('input', renderLogs);
  $('#logs-pause').addEventListener('change', renderLogs);
  $('#logs-since').addEventListener('change', () => {
    const name = $('#logs-name').textContent;
    if (name) showLogs(name);
  });
  $('#tpl').addEventListener('change', renderParams);
  $('#new-instance').addEventListener('submit', createInstance);
  $('#new-proc').addEventListener('submit', runProc);
  $('#new-run').addEventListener('submit', startRun);
  $('#ev-unit').addEventListener('change', renderEvents);
  $('#ev-kind').addEventListener('change', renderEvents);
  window.addEventListener('hashchange', showView);
  showView();
  connect();
  await refresh();
  // CPU and memory move without events: a slow refresh keeps the sparklines going, only while
  // the page is seen (a hidden tab costs the daemon nothing).
  setInterval(() => { if (document.visibilityState === 'visible') refresh(); }, 10000);
}

main();
