// The sqlq console page. Every piece of user data (query text, cells, errors, names) is put in
// the page with textContent, never as HTML: a cell holding <script> shows as those characters.
'use strict';
(function () {
  const PAGE = 100;
  const $ = (id) => document.getElementById(id);
  const state = { me: null, tasks: new Map(), selected: null, offset: 0, want: 0, total: 0, skew: 0, events: null, fleetTimer: null };

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  async function api(method, path, body) {
    const opts = { method, headers: {}, credentials: 'same-origin' };
    if (body !== undefined) { opts.headers['Content-Type'] = 'application/json'; opts.body = JSON.stringify(body); }
    if (method !== 'GET' && state.me) opts.headers['X-CSRF-Token'] = state.me.csrf;
    const r = await fetch(path, opts);
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const err = new Error((data && data.error) || ('HTTP ' + r.status));
      err.status = r.status;
      throw err;
    }
    return data;
  }

  function serverNow() { return Date.now() + state.skew; }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '';
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    const m = Math.floor(ms / 60000), s = Math.floor((ms % 60000) / 1000);
    return m + ' min ' + String(s).padStart(2, '0') + ' s';
  }

  function elapsed(t) {
    if (!t.started_at) return null;
    const end = (t.status === 'running' || t.status === 'queued') ? serverNow() : (t.finished_at || serverNow());
    return Math.max(0, end - t.started_at);
  }

  const ended = (s) => s === 'succeeded' || s === 'failed' || s === 'cancelled';
  // "queued: user limit" while the user's other tasks fill [query] max_running_per_user.
  const statusText = (t) => t.waiting_on ? t.status + ': ' + t.waiting_on : t.status;

  // --- sign-in ---
  function show(section) {
    for (const id of ['login', 'console', 'admin']) $(id).hidden = id !== section;
    $('tab-console').classList.toggle('active', section === 'console');
    $('tab-admin').classList.toggle('active', section === 'admin');
    if (section === 'admin') startFleet(); else stopFleet();
  }

  async function start() {
    try {
      state.me = await api('GET', '/api/me');
    } catch (e) {
      state.me = null;
    }
    if (!state.me) { $('nav').hidden = true; show('login'); $('login-user').focus(); return; }
    $('nav').hidden = false;
    $('whoami').textContent = state.me.user + (state.me.admin ? ' (admin)' : '');
    $('tab-admin').hidden = !state.me.admin;
    show('console');
    await loadHistory();
    connectEvents();
  }

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('login-error').textContent = '';
    try {
      await api('POST', '/api/login', { user: $('login-user').value, password: $('login-password').value });
      $('login-password').value = '';
      await start();
    } catch (e) {
      $('login-error').textContent = e.message;
    }
  });

  $('logout').addEventListener('click', async () => {
    try { await api('POST', '/api/logout'); } catch (e) { /* signed out anyway */ }
    if (state.events) state.events.close();
    state.me = null; state.tasks.clear(); state.selected = null;
    $('history').replaceChildren(); $('detail').hidden = true;
    $('nav').hidden = true;
    show('login');
  });

  $('tab-console').addEventListener('click', () => show('console'));
  $('tab-admin').addEventListener('click', () => show('admin'));

  // --- history and live status ---
  async function loadHistory() {
    const data = await api('GET', '/api/tasks?limit=200');
    state.skew = data.now - Date.now();
    state.tasks.clear();
    for (const t of data.tasks) state.tasks.set(t.id, t);
    renderHistory();
    if (state.selected && state.tasks.has(state.selected)) renderDetail(state.tasks.get(state.selected));
  }

  function connectEvents() {
    if (state.events) state.events.close();
    const es = new EventSource('/api/events');
    state.events = es;
    es.addEventListener('open', () => { $('live').classList.add('on'); loadHistory().catch(() => {}); });
    es.addEventListener('error', () => { $('live').classList.remove('on'); });
    es.addEventListener('task', (ev) => {
      const d = JSON.parse(ev.data);
      state.skew = d.now - Date.now();
      upsert(d.task);
    });
  }

  function upsert(t) {
    const old = state.tasks.get(t.id);
    state.tasks.set(t.id, t);
    if (!old) renderHistory(); else renderRow(t);
    if (state.selected === t.id) {
      renderDetail(t);
      if (t.status === 'succeeded' && (!old || old.status !== 'succeeded')) loadPage(t.id, 0);
    }
  }

  function rowFor(id) { return $('history').querySelector('li[data-id="' + id + '"]'); }

  function renderHistory() {
    const ids = [...state.tasks.keys()].sort((a, b) => b - a);
    const list = $('history');
    list.replaceChildren();
    for (const id of ids) {
      const li = el('li', 'task');
      li.dataset.id = String(id);
      li.append(el('span', 'task-id', '#' + id), el('span', 'task-status status'), el('span', 'task-elapsed'),
                el('span', 'task-sql'));
      const stop = el('button', 'task-stop', 'Stop');
      stop.type = 'button';
      stop.addEventListener('click', (ev) => { ev.stopPropagation(); cancel(id); });
      li.append(stop);
      li.addEventListener('click', () => select(id));
      list.append(li);
      renderRow(state.tasks.get(id));
    }
  }

  function renderRow(t) {
    const li = rowFor(t.id);
    if (!li) return;
    li.querySelector('.task-status').textContent = statusText(t);
    li.querySelector('.task-status').className = 'task-status status ' + t.status;
    li.dataset.status = t.status;
    li.querySelector('.task-elapsed').textContent = fmtMs(elapsed(t));
    li.querySelector('.task-sql').textContent = t.sql;
    li.querySelector('.task-sql').title = t.sql;
    li.querySelector('.task-stop').hidden = ended(t.status);
    li.classList.toggle('selected', state.selected === t.id);
  }

  setInterval(() => {
    for (const t of state.tasks.values()) if (t.status === 'running') {
      const li = rowFor(t.id);
      if (li) li.querySelector('.task-elapsed').textContent = fmtMs(elapsed(t));
      if (state.selected === t.id) $('detail-elapsed').textContent = fmtMs(elapsed(t));
    }
  }, 100);

  // --- one task ---
  function select(id) {
    state.selected = id;
    for (const li of $('history').children) li.classList.toggle('selected', li.dataset.id === String(id));
    const t = state.tasks.get(id);
    $('result').hidden = true;
    if (t) {
      renderDetail(t);
      if (t.status === 'succeeded') loadPage(id, 0);
    }
    // The list holds a preview of the SQL: fetch the whole task.
    api('GET', '/api/tasks/' + id).then((full) => {
      if (state.selected === id) $('detail-sql').textContent = full.sql;
    }).catch(() => {});
  }

  function renderDetail(t) {
    $('detail').hidden = false;
    $('detail').dataset.id = String(t.id);
    $('detail').dataset.status = t.status;
    $('detail-title').textContent = 'Task #' + t.id;
    $('detail-status').textContent = statusText(t);
    $('detail-status').className = 'status ' + t.status;
    $('detail-elapsed').textContent = fmtMs(elapsed(t));
    if ($('detail-sql').dataset.id !== String(t.id)) { $('detail-sql').textContent = t.sql; $('detail-sql').dataset.id = String(t.id); }
    $('detail-stop').hidden = ended(t.status);
    const err = t.error && t.status !== 'succeeded' ? t.error : '';
    $('detail-error').hidden = !err;
    $('detail-error').textContent = err;
    if (t.status !== 'succeeded') $('result').hidden = true;
  }

  async function cancel(id) {
    try {
      const r = await api('POST', '/api/tasks/' + id + '/cancel');
      upsert(r.task);
    } catch (e) {
      if (state.selected === id) { $('detail-error').hidden = false; $('detail-error').textContent = e.message; }
    }
  }
  $('detail-stop').addEventListener('click', () => { if (state.selected) cancel(state.selected); });

  function cellText(v) {
    if (v === null) return null;
    if (typeof v === 'string') return v;
    if (typeof v === 'object' && v && typeof v.blob_hex === 'string') return "x'" + v.blob_hex + "'";
    return JSON.stringify(v);
  }

  // Pages asked for in a row (Next, Next, Next) count from the last one asked for, and only
  // the answer to the last one is shown.
  async function loadPage(id, offset) {
    state.want = offset;
    let page;
    try {
      page = await api('GET', '/api/tasks/' + id + '/result?offset=' + offset + '&limit=' + PAGE);
    } catch (e) {
      if (state.selected === id) { $('detail-error').hidden = false; $('detail-error').textContent = e.message; }
      return;
    }
    if (state.selected !== id || state.want !== offset) return;
    state.offset = offset; state.total = page.total;
    const head = el('tr');
    for (const c of page.columns) head.append(el('th', null, c));
    const body = document.createDocumentFragment();
    for (const row of page.rows) {
      const tr = el('tr');
      for (const v of row) {
        const text = cellText(v);
        tr.append(text === null ? el('td', 'null', 'NULL') : el('td', null, text));
      }
      body.append(tr);
    }
    $('result-table').tHead.replaceChildren(head);
    $('result-table').tBodies[0].replaceChildren(body);
    const last = Math.min(offset + page.rows.length, page.total);
    $('page-info').textContent = page.total === 0 ? 'no rows' : ('rows ' + (offset + 1) + '-' + last + ' of ' + page.total);
    $('page-prev').disabled = offset === 0;
    $('page-next').disabled = last >= page.total;
    $('csv-link').href = '/api/tasks/' + id + '/result.csv';
    $('result').hidden = false;
  }
  $('page-prev').addEventListener('click', () => { if (state.want > 0) loadPage(state.selected, Math.max(0, state.want - PAGE)); });
  $('page-next').addEventListener('click', () => { if (state.want + PAGE < state.total) loadPage(state.selected, state.want + PAGE); });

  // --- run ---
  async function run() {
    const sql = $('editor').value;
    $('submit-error').textContent = '';
    if (!sql.trim()) { $('submit-error').textContent = 'write a query first'; return; }
    try {
      const r = await api('POST', '/api/tasks', { sql });
      const t = await api('GET', '/api/tasks/' + r.id);
      if (!state.tasks.has(t.id) || !ended(state.tasks.get(t.id).status)) state.tasks.set(t.id, t);
      renderHistory();
      select(r.id);
    } catch (e) {
      $('submit-error').textContent = e.message;
    }
  }
  $('run').addEventListener('click', run);
  $('editor').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(); }
  });

  // --- the fleet (admins) ---
  async function loadFleet() {
    let f;
    try { f = await api('GET', '/api/fleet'); } catch (e) { $('fleet-summary').textContent = e.message; return; }
    const sup = f.supervisor;
    const q = f.queue || {};
    let summary = sup ? ('supervisor pid ' + sup.pid + ', ' + sup.phase + ', ' + sup.ready + '/' + sup.target + ' workers ready')
                      : ('no supervisor: ' + (f.supervisor_error || ''));
    summary += q.error ? ('; queue: ' + q.error) : ('; queue ' + q.name + ': ' + q.messages + ' waiting, ' + q.consumers + ' consumers');
    $('fleet-summary').textContent = summary;
    const tb = $('fleet-workers').tBodies[0];
    tb.replaceChildren();
    for (const w of (sup && sup.workers) || []) {
      const tr = el('tr');
      for (const v of [w.slot, w.pid, w.state, w.task, fmtMs(w.task_ms), w.tasks_done, w.restarts, w.last_exit])
        tr.append(el('td', null, v === null || v === undefined ? '' : v));
      tb.append(tr);
    }
    const cb = $('fleet-counts').tBodies[0];
    cb.replaceChildren();
    for (const [k, v] of Object.entries(f.tasks || {})) {
      const tr = el('tr');
      tr.append(el('th', null, k), el('td', null, v));
      cb.append(tr);
    }
  }
  function startFleet() { stopFleet(); loadFleet(); state.fleetTimer = setInterval(loadFleet, 2000); }
  function stopFleet() { if (state.fleetTimer) clearInterval(state.fleetTimer); state.fleetTimer = null; }

  start();
})();
