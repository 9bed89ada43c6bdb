/* Switchyard console, in the browser: live refresh of the server-rendered <main>, table sorting,
   and the site chart (uPlot). No framework: the server renders every table. */
/* global document, window, fetch, location, sessionStorage, URL, uPlot */
'use strict';

(() => {
  const body = document.body;
  const refreshMs = Number(body.dataset.refreshMs) || 5000;
  const status = document.getElementById('live-status');
  const sortKey = `sort:${location.pathname}`;

  const say = (text) => {
    if (status) status.textContent = text;
  };

  /* Sorting: by the cell's data-sort value; numbers as numbers, empty values last. */
  const sortTable = (table, column, direction) => {
    const tbody = table.tBodies[0];
    if (!tbody) return;
    const th = table.tHead.rows[0].cells[column];
    if (!th) return;
    const numeric = th.dataset.type === 'num';
    const rows = [...tbody.rows].filter(
      (r) => r.cells.length > column && r.cells[column].dataset.sort !== undefined,
    );
    const value = (row) => row.cells[column].dataset.sort;
    rows.sort((a, b) => {
      const x = value(a);
      const y = value(b);
      if (x === '' || y === '') return x === y ? 0 : x === '' ? 1 : -1;
      const d = numeric ? Number(x) - Number(y) : x.localeCompare(y, undefined, { numeric: true });
      return direction === 'descending' ? -d : d;
    });
    for (const row of rows) tbody.appendChild(row);
    for (const cell of table.tHead.rows[0].cells) cell.removeAttribute('aria-sort');
    th.setAttribute('aria-sort', direction);
  };

  const savedSorts = () => {
    try {
      return JSON.parse(sessionStorage.getItem(sortKey) || '{}');
    } catch {
      return {};
    }
  };

  const applySorts = () => {
    const sorts = savedSorts();
    for (const [id, s] of Object.entries(sorts)) {
      const table = document.getElementById(id);
      if (table) sortTable(table, s.column, s.direction);
    }
  };

  document.addEventListener('click', (event) => {
    const th = event.target.closest('table.sortable th');
    if (!th) return;
    const table = th.closest('table');
    const direction = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    sortTable(table, th.cellIndex, direction);
    const sorts = savedSorts();
    sorts[table.id] = { column: th.cellIndex, direction };
    sessionStorage.setItem(sortKey, JSON.stringify(sorts));
  });
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && event.target.matches('table.sortable th')) event.target.click();
  });

  /* Live refresh: the same <main>, rendered by the server from the shared snapshot. */
  const live = document.getElementById('live');
  let failures = 0;
  const refresh = async () => {
    try {
      const url = new URL(location.href);
      url.searchParams.set('partial', '1');
      const res = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const html = await res.text();
      const charts = document.getElementById('charts');
      live.innerHTML = html;
      const placeholder = document.getElementById('charts');
      if (charts && placeholder) placeholder.replaceWith(charts);
      applySorts();
      failures = 0;
      say(`live · ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      failures += 1;
      say(`not updated (${failures}): ${err.message}`);
    }
  };
  applySorts();
  say(`live · every ${refreshMs / 1000} s`);
  window.setInterval(refresh, refreshMs);

  /* The site chart: SoC (%) and power (W) per unit. */
  const site = body.dataset.site;
  if (body.dataset.page !== 'site' || !site || typeof uPlot === 'undefined') return;
  const plots = new Map();
  const drawCharts = async () => {
    const container = document.getElementById('charts');
    if (!container) return;
    try {
      const res = await fetch(`/api/sites/${encodeURIComponent(site)}/series`, {
        credentials: 'same-origin',
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const { units } = await res.json();
      if (units.length === 0 && plots.size === 0)
        container.innerHTML = '<p class="muted">No readings in the engine for this site yet.</p>';
      for (const unit of units) {
        const data = [unit.tS, unit.socPct, unit.powerW];
        const existing = plots.get(unit.device);
        if (existing) {
          existing.plot.setData(data);
          existing.box.dataset.points = String(unit.tS.length);
          continue;
        }
        if (plots.size === 0) container.textContent = '';
        const box = document.createElement('div');
        box.className = 'chart';
        box.dataset.device = unit.device;
        box.dataset.points = String(unit.tS.length);
        const title = document.createElement('h3');
        title.textContent = unit.device;
        box.appendChild(title);
        container.appendChild(box);
        const plot = new uPlot(
          {
            width: Math.max(360, box.clientWidth || 420),
            height: 200,
            scales: { soc: { range: [0, 100] }, w: {} },
            series: [
              {},
              { label: 'SoC %', scale: 'soc', stroke: '#1a7f37', width: 1.5 },
              { label: 'W', scale: 'w', stroke: '#0969da', width: 1.5 },
            ],
            axes: [
              {},
              { scale: 'soc', label: 'SoC %' },
              { scale: 'w', side: 1, label: 'W', size: 70, grid: { show: false } },
            ],
          },
          data,
          box,
        );
        plots.set(unit.device, { plot, box });
      }
    } catch (err) {
      say(`chart not updated: ${err.message}`);
    }
  };
  drawCharts();
  window.setInterval(drawCharts, Math.max(refreshMs, 30000));
})();
