// Live progress for the Tables and Coupled records pages: every 2 seconds it reads
// /progress.json and updates the bars the page rendered (which show their values without this
// script too). It never reloads the page, so inputs keep what was typed and nothing is announced
// again; only a change of a state is announced, in the page's one aria-live region.
(function () {
  'use strict';
  var live = document.getElementById('progress-live');
  var states = {};

  function duration(s) {
    s = Math.round(s);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + 'h' : '') + (h || m ? m + 'm' : '') + r + 's';
  }

  function words(state) { return state.replace('_', ' '); }

  // bar fills a cell with a bar and its text, as the templates' "bar" does.
  function bar(cell, p) {
    while (cell.firstChild) { cell.removeChild(cell.firstChild); }
    if (!p) { cell.appendChild(document.createTextNode('—')); return; }
    if (!p.total) { cell.appendChild(document.createTextNode('counting…')); return; }
    var el = document.createElement('progress');
    el.max = p.total;
    el.value = Math.min(p.done, p.total);
    el.setAttribute('aria-label', p.done + ' of ' + p.total + ' done');
    el.textContent = Math.floor(Math.min(p.done, p.total) * 100 / p.total) + '%';
    cell.appendChild(el);
    var t = ' ' + p.done + ' / ' + p.total;
    if (p.rate_per_second > 0) { t += ', ' + p.rate_per_second.toFixed(1) + '/s'; }
    if (p.left_seconds !== undefined && p.left_seconds !== null) { t += ', ' + duration(p.left_seconds) + ' left'; }
    var span = document.createElement('span');
    span.className = 'progress-text';
    span.textContent = t;
    cell.appendChild(span);
  }

  function set(selector, text) {
    var el = document.querySelector(selector);
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function announce(key, state, message) {
    if (states[key] !== undefined && states[key] !== state && live) { live.textContent = message; }
    states[key] = state;
  }

  function apply(data) {
    (data.table_states || []).forEach(function (t) {
      var cell = document.querySelector('[data-progress="table:' + t.table + '"]');
      if (!cell) { return; }
      bar(cell, t.progress);
      set('[data-state="table:' + t.table + '"]', words(t.state));
      set('[data-backlog="table:' + t.table + '"]', t.backlog === undefined ? '—' : String(t.backlog));
      announce('table:' + t.table, t.state, t.table + ' is ' + words(t.state) + '.');
    });
    (data.coupling_runs || []).forEach(function (r) {
      var cell = document.querySelector('[data-progress="run:' + r.table + '"]');
      if (!cell) { return; }
      bar(cell, r.state === 'running' || r.progress.total ? r.progress : null);
      set('[data-state="run:' + r.table + '"]', r.state);
      set('[data-counts="run:' + r.table + '"]', r.coupled + ' coupled, ' + r.created + ' created, ' + r.failed + ' failed, ' + r.skipped + ' not sent');
      announce('run:' + r.table, r.id + r.state, 'Coupling run of ' + r.table + ' ' + r.state + ': ' + r.coupled + ' coupled, ' + r.created + ' created, ' + r.failed + ' failed.');
    });
  }

  function poll() {
    fetch('/progress.json', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { apply(data); } })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
}());
