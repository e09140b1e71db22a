// app.js: the ursa console. Every string from the server is put in the
// page as text (el() makes text nodes), never as HTML: labels, URLs and
// reasons come from the web.
'use strict';
const $ = (s) => document.querySelector(s);
let csrf = null;
let timer = null;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined)
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function toast(msg) {
  const t = $('#toast');
  t.textContent = msg;
  t.style.display = 'block';
  clearTimeout(toast.t);
  toast.t = setTimeout(() => { t.style.display = 'none'; }, 2500);
}

class Unauthorized extends Error {}

async function api(path) {
  const r = await fetch(path, {credentials: 'same-origin'});
  if (r.status === 401) throw new Unauthorized();
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
  return j;
}

async function post(path, params) {
  const r = await fetch(path, {
    method: 'POST', credentials: 'same-origin',
    headers: {'Content-Type': 'application/x-www-form-urlencoded', 'X-Ursa': '1',
              'X-CSRF-Token': csrf || ''},
    body: new URLSearchParams(params).toString(),
  });
  if (r.status === 401) throw new Unauthorized();
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
  return j;
}

function show(...nodes) {
  const m = $('#main');
  m.replaceChildren(...nodes.filter(n => n !== null && n !== undefined));
}

function table(head, rows) {
  return el('div', {class: 'scroll'}, el('table', {},
    el('thead', {}, el('tr', {}, head.map(h => el('th', {}, h)))),
    el('tbody', {}, rows.map(r => el('tr', {}, r.map(c => el('td', {}, c)))))));
}

function link(href, text) { return el('a', {href}, text); }
// a count with thousands separators (12,345), as every table shows them
function num(x) { return x === '' || x === null || x === undefined ? '-' : Number(x).toLocaleString('en-US'); }
function pct(x) { return x === '' || x === undefined ? '-' : (100 * Number(x)).toFixed(2) + '%'; }
function fx(x, d) { return x === null || x === undefined ? '-' : Number(x).toFixed(d); }
function when(ms) { return ms ? new Date(Number(ms)).toLocaleString() : '-'; }

// ---- login -------------------------------------------------------------------------------

function loginView(next) {
  const err = el('div', {class: 'err', id: 'loginerr'});
  const input = el('input', {id: 'token', type: 'password', autocomplete: 'current-password',
                             placeholder: 'console token'});
  const form = el('form', {class: 'login', id: 'login', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const r = await fetch('/api/login', {method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/x-www-form-urlencoded', 'X-Ursa': '1'},
        body: new URLSearchParams({token: input.value}).toString()});
      const j = await r.json();
      if (!r.ok) { err.textContent = j.error || 'login failed'; return; }
      csrf = j.csrf;
      $('#logout').hidden = false;
      location.hash = next && next !== '#/login' ? next : '#/datasets';
      route();
    } catch (x) { err.textContent = String(x); }
  }}, el('label', {for: 'token'}, 'Token: the one line of run/console.token in the state ' +
         'directory (./.ursa/run/console.token by default; ursa up prints its path)'), input,
      el('button', {type: 'submit'}, 'Log in'), err);
  show(el('h1', {}, 'Log in'), form);
  input.focus();
}

// ---- datasets ------------------------------------------------------------------------------

async function datasetsView() {
  const ds = await api('/api/datasets');
  const rows = ds.map(d => {
    const done = d.verified + d.duplicate + d.rejected + d.failed;
    const bar = el('div', {class: 'bar', title: done + ' of ' + d.total + ' final'}, el('div', {}));
    bar.firstChild.style.width = (d.total ? 100 * done / d.total : 0) + '%';
    return [link('#/dataset/' + encodeURIComponent(d.name), d.name), num(d.total), num(d.verified),
            num(d.duplicate), num(d.rejected), num(d.failed), num(d.pending), num(d.edits), bar];
  });
  show(el('h1', {}, 'Datasets'),
       rows.length ? table(['dataset', 'URLs', 'verified', 'duplicate', 'rejected', 'failed',
                            'pending', 'edits', 'progress'], rows)
                   : el('p', {}, 'No dataset yet: ursa ingest --dataset NAME urls.txt'));
  return 2000;
}

async function datasetView(name) {
  const d = await api('/api/dataset?name=' + encodeURIComponent(name));
  const labels = d.labels.map(l => [l.label, num(l.verified), num(l.edited), num(l.duplicate),
                                    num(l.rejected), num(l.failed), num(l.pending)]);
  // failures only (a duplicate is a copy kept once, not a failure), most first, with a total
  const failed = d.reasons.filter(r => r.state !== 'duplicate')
    .sort((a, b) => Number(b.n) - Number(a.n) || String(a.reason).localeCompare(String(b.reason)));
  const total = failed.reduce((t, r) => t + Number(r.n), 0);
  const reasons = failed.map(r => [r.label, r.state, r.reason, num(r.n)]);
  if (reasons.length) reasons.push(['', '', 'total', num(total)]);
  show(el('h1', {}, 'Dataset ', name),
       el('p', {}, num(d.total) + ' URLs; ' + num(d.edits) + ' edits (' + num(d.deleted) + ' deleted, ' +
          num(d.relabelled) + ' relabelled in force). ',
          link('#/clean/' + encodeURIComponent(name), 'Open the cleaner'), ' · ',
          link('#/jobs?dataset=' + encodeURIComponent(name), 'Jobs'), ' · ',
          link('#/models?dataset=' + encodeURIComponent(name), 'Models')),
       el('h2', {}, 'By label and state'),
       table(['label', 'verified', 'as edited', 'duplicate', 'rejected', 'failed', 'pending'], labels),
       el('h2', {}, 'Failures by reason'),
       reasons.length ? el('div', {id: 'failures'}, table(['label', 'state', 'reason', 'URLs'], reasons))
                      : el('p', {}, 'None.'));
  return 2000;
}

// ---- jobs -------------------------------------------------------------------------------------

async function jobsView(q) {
  const ds = new URLSearchParams(q).get('dataset');
  const jobs = await api('/api/jobs' + (ds ? '?dataset=' + encodeURIComponent(ds) : ''));
  const rows = jobs.map(j => [link('#/job/' + j.id, j.id), j.kind || '', j.dataset || '',
    j.arch || '', j.state || '', j.epoch || '0', j.error_rate ? Number(j.error_rate).toFixed(4) : '-',
    when(j.created_ms)]);
  show(el('h1', {}, 'Jobs'), rows.length ? table(['job', 'kind', 'dataset', 'arch', 'state', 'epochs done',
    'error_rate', 'created'], rows) : el('p', {}, 'No job yet.'));
  return 2000;
}

// A line plot of series [{name, points: [[x, y]...]}] on log x when logx.
function plot(series, {logx = false, xlabel = '', ylabel = ''} = {}) {
  const W = 480, H = 240, L = 48, B = 28, ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('width', W);
  const ok = p => Number.isFinite(p[0]) && Number.isFinite(p[1]);
  const pts = series.flatMap(s => s.points).filter(ok);
  if (!pts.length) return svg;
  const fx = logx ? (x => Math.log10(x)) : (x => x);
  let x0 = Math.min(...pts.map(p => fx(p[0]))), x1 = Math.max(...pts.map(p => fx(p[0])));
  let y0 = Math.min(...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + 1;
  const sx = x => L + (fx(x) - x0) / (x1 - x0) * (W - L - 10);
  const sy = y => H - B - (y - y0) / (y1 - y0) * (H - B - 10);
  const colors = ['#36c', '#c63', '#3a3'];
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  add('line', {x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: '#999'});
  add('line', {x1: L, y1: 10, x2: L, y2: H - B, stroke: '#999'});
  add('text', {x: 2, y: 14, 'font-size': 10}, y1.toPrecision(3));
  add('text', {x: 2, y: H - B, 'font-size': 10}, y0.toPrecision(3));
  add('text', {x: L, y: H - 8, 'font-size': 10}, (logx ? 10 ** x0 : x0).toPrecision(2));
  add('text', {x: W - 60, y: H - 8, 'font-size': 10}, (logx ? 10 ** x1 : x1).toPrecision(2));
  add('text', {x: W / 2 - 20, y: H - 8, 'font-size': 11}, xlabel);
  add('text', {x: L + 4, y: 22, 'font-size': 11}, ylabel);
  series.forEach((s, i) => {
    const d = s.points.filter(ok)
      .map((p, k) => (k ? 'L' : 'M') + sx(p[0]).toFixed(1) + ',' + sy(p[1]).toFixed(1)).join('');
    add('path', {d, fill: 'none', stroke: colors[i % 3], 'stroke-width': 2});
    add('text', {x: W - 120, y: 20 + 14 * i, 'font-size': 11, fill: colors[i % 3]}, s.name);
  });
  return svg;
}

async function jobView(id) {
  const j = await api('/api/job?id=' + encodeURIComponent(id));
  const rows = (j.rows || []).map((r, i) => [i + 1, (j.kind === 'audit' ? 'fold ' : 'stage ') + r[0],
    r[1], fx(r[2], 4), fx(r[3], 4), fx(r[4], 4), fx(r[5], 1) + ' s']);
  const parts = [el('h1', {}, 'Job ', id),
    el('p', {}, (j.kind || '') + ' on ' + (j.dataset || '') + ' (' + (j.arch || '') + '): ' +
       (j.state || '') + (j.error ? ': ' + j.error : '') +
       (j.state === 'running' ? ', step ' + (j.step || 0) + '/' + (j.steps || 0) +
        ', loss ' + Number(j.loss || 0).toFixed(4) : '')),
    j.model ? el('p', {}, 'Model: ', link('#/model/' + encodeURIComponent(j.model), j.model)) : null,
    j.kind === 'audit' && j.state === 'done' ? el('p', {}, (j.n_label || 0) + ' label issues, ' +
      (j.n_duplicate || 0) + ' near-duplicates, ' + (j.n_outlier || 0) + ' outliers: ',
      link('#/clean/' + encodeURIComponent(j.dataset), 'open the cleaner')) : null];
  if (rows.length) {
    parts.push(el('h2', {}, 'Epochs'),
      table(['#', 'part', 'epoch', 'train_loss', 'valid_loss', 'error_rate', 'time'], rows),
      el('h2', {}, 'Loss'),
      el('div', {id: 'losscurve'}, plot([
        {name: 'train_loss', points: j.rows.map((r, i) => [i + 1, r[2]])},
        {name: 'valid_loss', points: j.rows.map((r, i) => [i + 1, r[3]])}],
        {xlabel: 'epoch', ylabel: 'loss'})));
  }
  if (j.lr_curve && j.lr_curve.length) {
    parts.push(el('h2', {}, 'lr_find: suggested ' + (j.lr_suggestion || '-')),
      el('div', {id: 'lrplot'}, plot([{name: 'loss', points: j.lr_curve}],
                                      {logx: true, xlabel: 'learning rate', ylabel: 'loss'})));
  }
  show(...parts);
  return j.state === 'running' || j.state === 'queued' ? 1500 : 0;
}

// ---- models --------------------------------------------------------------------------------------

async function modelsView(q) {
  const ds = new URLSearchParams(q).get('dataset');
  const ms = await api('/api/models' + (ds ? '?dataset=' + encodeURIComponent(ds) : ''));
  show(el('h1', {}, 'Models'), ms.length ? table(['model', 'dataset', 'arch', 'px', 'error_rate',
    'validation images', 'job'], ms.map(m => [link('#/model/' + encodeURIComponent(m.id), m.id),
    m.dataset, m.arch, m.size, Number(m.error_rate).toFixed(4), m.n_valid,
    link('#/job/' + encodeURIComponent(m.job), m.job)])) : el('p', {}, 'No model yet.'));
  return 0;
}

async function modelView(id) {
  const m = await api('/api/model?id=' + encodeURIComponent(id));
  const max = Math.max(1, ...m.cm.flat());
  const cm = el('table', {id: 'cm'}, el('tr', {}, el('th', {}, 'actual \\ predicted'),
    m.classes.map(c => el('th', {}, c))),
    m.cm.map((row, a) => el('tr', {}, el('th', {}, m.classes[a]), row.map((n, p) => {
      const td = el('td', {}, n);
      const v = n / max;
      td.style.background = a === p ? `rgba(40,140,60,${v})` : `rgba(200,60,40,${v})`;
      return td;
    }))));
  show(el('h1', {}, 'Model ', id),
    el('p', {}, m.arch + ' at ' + m.size + ' px on ' + m.dataset + ': error_rate ' +
       Number(m.error_rate).toFixed(4) + ', valid_loss ' + Number(m.valid_loss).toFixed(4) + ' on ' +
       m.n_valid + ' validation images (' + m.n_train + ' trained on)'),
    el('h2', {}, 'Confusion matrix'), el('div', {class: 'scroll'}, cm),
    el('h2', {}, 'Most confused'),
    m.pairs.length ? table(['actual', 'predicted', 'images'],
                           m.pairs.map(p => [m.classes[p[0]], m.classes[p[1]], p[2]]))
                   : el('p', {}, 'None: every validation image is right.'),
    el('h2', {}, 'Top losses'),
    el('div', {class: 'gallery'}, m.top_losses.map(t => el('div', {class: 'card'},
      el('div', {class: 'imgs'}, el('img', {src: '/api/thumb?blob=' + t.jpeg, alt: '', loading: 'lazy'})),
      el('div', {class: 't'}, t.actual + ' → ' + t.pred),
      el('div', {class: 'muted'}, 'loss ' + fx(t.loss, 2) + ', p ' + fx(t.p, 2))))),
    el('p', {}, link('#/clean/' + encodeURIComponent(m.dataset) + '?kind=loss', 'Clean the top losses')));
  return 0;
}

// ---- the cleaner ------------------------------------------------------------------------------

const clean = {items: [], classes: [], focus: 0};

// The undo stack lives in the browser's localStorage: it survives a reload.
function undoStack() {
  try { return JSON.parse(localStorage.getItem('ursa-undo') || '[]'); } catch (x) { return []; }
}
function saveUndo(st) { localStorage.setItem('ursa-undo', JSON.stringify(st.slice(-200))); }

async function decide(ds, item, op, label) {
  const prev = {decision: item.decision, label: item.label};
  // base: the decision shown, so one made meanwhile elsewhere is a conflict (409)
  const params = {dataset: ds, image: item.image, op, from: item.given, base: item.decision};
  if (item.decision === 'relabel') params.base_label = item.label;
  if (op === 'relabel') params.label = label;
  const r = await post('/api/edit', params);
  item.decision = op === 'restore' ? 'none' : op;
  item.label = op === 'relabel' ? label : item.given;
  const st = undoStack();
  st.push({ds, image: item.image, given: item.given, prev, now: {decision: item.decision, label: item.label}});
  saveUndo(st);
  toast(op + (op === 'relabel' ? ' to ' + label : '') + (r.applied ? ' (edit #' + r.seq + ')' : ' (queued)'));
}

async function undo() {
  const st = undoStack();
  const u = st.pop();
  if (!u) { toast('nothing to undo'); return; }
  const {ds, image, given, prev, now} = u;
  const op = prev.decision === 'none' ? 'restore' : prev.decision;
  const params = {dataset: ds, image, op, from: given, reason: 'undo'};
  if (now) { params.base = now.decision; if (now.decision === 'relabel') params.base_label = now.label; }
  if (op === 'relabel') params.label = prev.label;
  await post('/api/edit', params);
  saveUndo(st);
  const item = clean.items.find(it => it.image === image);
  if (item) { item.decision = prev.decision; item.label = prev.label; }
  toast('undone');
}

function card(ds, item, i, rerender) {
  const sel = el('select', {'aria-label': 'relabel to', class: 'relabel'},
    el('option', {value: ''}, 'relabel…'),
    clean.classes.map(c => el('option', {value: c}, c)));
  const act = (fn) => async () => {
    try { await fn(); } catch (x) { if (x instanceof Unauthorized) return loginView(location.hash); toast(String(x.message || x)); }
    rerender();
  };
  sel.addEventListener('change', act(() => sel.value && decide(ds, item, 'relabel', sel.value)));
  const imgs = el('div', {class: 'imgs'},
    el('img', {src: '/api/thumb?blob=' + item.jpeg, alt: '', loading: 'lazy'}),
    item.partner_jpeg && item.partner_jpeg !== '-' ?
      el('img', {src: '/api/thumb?blob=' + item.partner_jpeg, alt: '', loading: 'lazy', title: 'its duplicate'}) : null);
  const c = el('div', {class: 'card d-' + item.decision, tabindex: 0, 'data-image': item.image,
                       'data-index': i},
    imgs,
    el('div', {class: 't'}, el('span', {class: 'badge'}, item.kind), ' ', fx(item.score, 2)),
    el('div', {class: 't given'}, item.given, item.label !== item.given ? ' → ' + item.label : ''),
    item.kind === 'duplicate' ? el('div', {class: 't'}, 'same as an image of ', item.suggested)
                              : el('div', {class: 't'}, 'suggests ', el('b', {class: 'suggested'}, item.suggested)),
    el('div', {class: 't muted url', title: item.url}, item.url || ''),
    el('div', {class: 't decision'}, item.decision === 'none' ? '' : item.decision),
    el('div', {class: 'btns'},
      el('button', {class: 'keep', onclick: act(() => item.decision !== 'none' ? decide(ds, item, 'restore') : (item.kept = true))}, 'Keep'),
      el('button', {class: 'delete', onclick: act(() => decide(ds, item, 'delete'))}, 'Delete'),
      item.kind === 'label' || item.kind === 'loss' ?
        el('button', {class: 'accept', onclick: act(() => decide(ds, item, 'relabel', item.suggested))}, 'Accept') : null,
      sel));
  c.addEventListener('focus', () => { clean.focus = i; });
  return c;
}

async function cleanView(ds, q) {
  const p = new URLSearchParams(q);
  const kind = p.get('kind') || '', label = p.get('label') || '', page = Number(p.get('page') || 0);
  const per = 48;
  const qs = new URLSearchParams({dataset: ds, kind, label, page, per});
  const r = await api('/api/suspects?' + qs.toString());
  clean.items = r.items;
  clean.classes = r.classes.slice().sort();
  clean.ds = ds;
  const go = (changes) => {
    const n = new URLSearchParams({kind, label, page, ...changes});
    location.hash = '#/clean/' + encodeURIComponent(ds) + '?' + n.toString();
  };
  const kindSel = el('select', {id: 'kind', 'aria-label': 'kind'},
    [['', 'all suspects'], ['label', 'label issues'], ['duplicate', 'near-duplicates'],
     ['outlier', 'outliers'], ['loss', 'top losses']].map(([v, t]) =>
      el('option', {value: v, selected: v === kind}, t)));
  kindSel.addEventListener('change', () => go({kind: kindSel.value, page: 0}));
  const labelSel = el('select', {id: 'label', 'aria-label': 'class'}, el('option', {value: ''}, 'every class'),
    clean.classes.map(c => el('option', {value: c, selected: c === label}, c)));
  labelSel.addEventListener('change', () => go({label: labelSel.value, page: 0}));
  const gallery = el('div', {class: 'gallery', id: 'gallery'});
  const render = () => {
    gallery.replaceChildren(...clean.items.map((it, i) => card(ds, it, i, render)));
    const f = gallery.children[Math.min(clean.focus, gallery.children.length - 1)];
    if (f && document.activeElement && document.activeElement.closest && document.activeElement.closest('.gallery')) f.focus();
  };
  clean.render = render;
  const pages = Math.max(1, Math.ceil(r.total / per));
  const retrain = el('button', {id: 'retrain', onclick: async () => {
    try {
      const j = await post('/api/retrain', {dataset: ds});
      location.hash = '#/retrain/' + j.job + '?before=' + encodeURIComponent(j.before) + '&model=' + encodeURIComponent(j.model);
    } catch (x) { toast(String(x.message || x)); }
  }}, 'Retrain with the cleaned data');
  show(el('h1', {}, 'Cleaner: ', ds),
    el('p', {class: 'muted'}, kind === 'loss' ? 'Top losses of the newest model.' :
       r.audit ? 'Suspects of audit ' + r.audit + ' (it saw edits up to #' + r.audit_edit_seq + ').'
               : 'No audit yet: ursa audit --dataset ' + ds),
    kind !== 'loss' && r.audit_unreliable ? el('p', {class: 'warn', id: 'unreliable', role: 'alert'},
      r.audit_warning) : null,
    el('div', {class: 'filters'}, kindSel, labelSel, el('button', {id: 'undo', onclick: async () => {
      try { await undo(); } catch (x) { toast(String(x.message || x)); } render(); }}, 'Undo'), retrain),
    el('p', {class: 'keys'}, 'Keys: ←/→ move, k keep, d delete, a accept the suggestion, 1-9 relabel to the n-th class, u undo.'),
    gallery,
    el('div', {class: 'pager'},
      el('button', {id: 'prev', disabled: page <= 0, onclick: () => go({page: page - 1})}, '‹ Previous'),
      el('span', {id: 'pageinfo'}, 'page ' + (page + 1) + ' of ' + pages + ', ' + num(r.total) +
         ' images, ' + num(r.decided || 0) + ' decided since the audit'),
      el('button', {id: 'next', disabled: page + 1 >= pages, onclick: () => go({page: page + 1})}, 'Next ›')));
  clean.focus = 0;
  render();
  return 0;
}

document.addEventListener('keydown', async (e) => {
  if (!location.hash.startsWith('#/clean/') || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target && (e.target.tagName === 'SELECT' || e.target.tagName === 'INPUT')) return;
  const items = clean.items;
  if (!items.length) return;
  const i = Math.min(clean.focus, items.length - 1), it = items[i];
  const move = (d) => {
    clean.focus = Math.max(0, Math.min(items.length - 1, i + d));
    const c = document.querySelector(`.card[data-index="${clean.focus}"]`);
    if (c) c.focus();
  };
  let op = null, label = null;
  if (e.key === 'ArrowRight' || e.key === 'j') return move(1);
  if (e.key === 'ArrowLeft') return move(-1);
  if (e.key === 'd') op = 'delete';
  else if (e.key === 'k') op = it.decision !== 'none' ? 'restore' : 'next';
  else if (e.key === 'a' && it.kind !== 'duplicate') { op = 'relabel'; label = it.suggested; }
  else if (/^[1-9]$/.test(e.key) && clean.classes[Number(e.key) - 1]) { op = 'relabel'; label = clean.classes[Number(e.key) - 1]; }
  else if (e.key === 'u') { e.preventDefault(); try { await undo(); } catch (x) { toast(String(x.message || x)); } clean.render(); return; }
  else return;
  e.preventDefault();
  try {
    if (op !== 'next') await decide(clean.ds, it, op, label);
    else it.kept = true;
  } catch (x) { toast(String(x.message || x)); }
  clean.render();
  move(1);
});

async function retrainView(id, q) {
  const p = new URLSearchParams(q);
  const j = await api('/api/job?id=' + encodeURIComponent(id));
  const rows = (j.rows || []).map((r, i) => [i + 1, r[1], fx(r[2], 4), fx(r[3], 4), fx(r[4], 4)]);
  const done = j.state === 'done';
  show(el('h1', {}, 'Retrain ', id),
    el('p', {id: 'retrainstate'}, 'state: ' + (j.state || '') + (j.error ? ': ' + j.error : '')),
    el('p', {id: 'beforeafter'}, 'error_rate before (' + (p.get('model') || 'previous model') + '): ' +
      (p.get('before') ? Number(p.get('before')).toFixed(4) : '-') +
      (done ? ', after: ' + Number(j.error_rate).toFixed(4) : ', after: (training)')),
    rows.length ? table(['#', 'epoch', 'train_loss', 'valid_loss', 'error_rate'], rows) : null,
    done && j.model ? el('p', {}, 'New model: ', link('#/model/' + encodeURIComponent(j.model), j.model)) : null);
  return done || j.state === 'failed' || j.state === 'cancelled' ? 0 : 1500;
}

// ---- routing -------------------------------------------------------------------------------------

async function route() {
  clearTimeout(timer);
  const h = location.hash || '#/datasets';
  const [path, q] = h.slice(1).split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  try {
    if (!csrf) {
      const s = await fetch('/api/session', {credentials: 'same-origin'});
      if (s.status === 401) return loginView(h);
      csrf = (await s.json()).csrf;
      $('#logout').hidden = false;
    }
    let again = 0;
    switch (parts[0]) {
      case 'dataset': again = await datasetView(parts[1]); break;
      case 'jobs': again = await jobsView(q); break;
      case 'job': again = await jobView(parts[1]); break;
      case 'models': again = await modelsView(q); break;
      case 'model': again = await modelView(parts[1]); break;
      case 'clean': again = await cleanView(parts[1], q); break;
      case 'retrain': again = await retrainView(parts[1], q); break;
      default: again = await datasetsView();
    }
    if (again) timer = setTimeout(() => { if (location.hash === h || (!location.hash && h === '#/datasets')) route(); }, again);
  } catch (x) {
    if (x instanceof Unauthorized) { csrf = null; return loginView(h); }
    show(el('h1', {}, 'Error'), el('p', {class: 'err'}, String(x.message || x)));
  }
}

$('#logout').addEventListener('click', async () => {
  try { await post('/api/logout', {}); } catch (x) { /* logged out either way */ }
  csrf = null;
  $('#logout').hidden = true;
  loginView('#/datasets');
});
window.addEventListener('hashchange', route);
route();
