// The findings page: select orphans (rows of this page, or every orphan the filters match),
// preview what would be queued, then queue it — both through POST /api/scans/{id}/purge, whose
// checks (complete scan, store fingerprints, the mass-deletion guard, min_age holds) decide.
(function () {
  'use strict';
  const box = document.getElementById('purge');
  if (!box || !window.assetgc) return;
  const { api, say, why } = window.assetgc;
  const canWrite = document.body.dataset.canWrite === 'true';
  const scanId = box.dataset.scan;
  const total = Number(box.dataset.total || 0);
  const byId = (id) => document.getElementById(id);
  const preview = byId('preview');
  const allMatching = byId('select-all-matching');
  const allowMass = byId('allow-mass-delete');
  const selectPage = byId('select-page');
  const count = byId('selected-count');
  const result = byId('purge-result');
  const dialog = byId('preview-dialog');
  const confirm = byId('confirm-queue');
  const cancel = byId('cancel-queue');
  const rows = () => Array.from(document.querySelectorAll('#orphans input[type="checkbox"][name="select"]'));
  const fmt = (n) => Number(n).toLocaleString('en-US');
  const mb = (n) => Number(n).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  // The purge body's selection: the filter for "All N matching", else the ticked keys.
  function selection() {
    if (allMatching && allMatching.checked) {
      const filter = {};
      if (box.dataset.store) filter.store = box.dataset.store;
      if (box.dataset.prefix) filter.prefix = box.dataset.prefix;
      return { filter };
    }
    const keys = rows().filter((b) => b.checked).map((b) => b.value);
    return keys.length ? { keys } : null;
  }

  function update() {
    const ticked = rows().filter((b) => b.checked).length;
    if (allMatching && allMatching.checked) {
      count.textContent = 'All ' + fmt(total) + ' matching selected';
    } else {
      count.textContent = fmt(ticked) + ' selected';
    }
    if (selectPage) {
      const all = rows();
      selectPage.checked = all.length > 0 && ticked === all.length;
      selectPage.indeterminate = ticked > 0 && ticked < all.length;
    }
    if (!canWrite) {
      preview.disabled = true;
      if (confirm) confirm.disabled = true;
      if (allowMass) allowMass.disabled = true;
    }
  }

  const GUARD = ' The mass-deletion guard refused this purge (on the command line, --allow-mass-delete overrides it); ' +
    'tick \u201cOverride the mass-deletion guard (audited)\u201d and preview again to queue anyway (audited).';

  function refused(res) {
    const msg = why(res);
    if (res.status === 409 && /allow-mass-delete|mass-delet/i.test(msg)) {
      say(msg + GUARD, true);
    } else {
      say(msg, true);
    }
  }

  function body(dryRun) {
    return Object.assign({}, pending, {
      dry_run: dryRun,
      allow_mass_delete: !!(allowMass && allowMass.checked),
    });
  }

  let pending = null;
  let opener = null;

  function show(p) {
    byId('preview-summary').textContent =
      fmt(p.count) + (p.count === 1 ? ' orphan, ' : ' orphans, ') + mb(p.size_mb) + ' MB would be queued for deletion.';
    const notes = [];
    if (p.held) notes.push(fmt(p.held) + ' held until they are older than the store\u2019s min_age.');
    if (p.skipped) notes.push(fmt(p.skipped) + ' selected keys are not orphans of this scan and are skipped.');
    byId('preview-held').textContent = notes.join(' ');
    const over = byId('preview-overridden');
    if (p.overridden && p.overridden.length) {
      over.textContent = 'The mass-deletion guard is overridden (audited): ' + p.overridden.join('; ');
      over.hidden = false;
    } else {
      over.textContent = '';
      over.hidden = true;
    }
    const list = byId('preview-keys');
    list.textContent = '';
    for (const k of p.first_keys || []) {
      const li = document.createElement('li');
      const code = document.createElement('code');
      code.textContent = k.key;
      li.appendChild(code);
      li.appendChild(document.createTextNode(' (' + k.store + ', ' + mb(k.size_bytes / 1048576) + ' MB)'));
      list.appendChild(li);
    }
    if (p.count > (p.first_keys || []).length) {
      const li = document.createElement('li');
      li.textContent = '\u2026 and ' + fmt(p.count - p.first_keys.length) + ' more';
      list.appendChild(li);
    }
    confirm.disabled = !canWrite || p.count === 0;
  }

  async function onPreview() {
    if (!canWrite) return;
    const sel = selection();
    if (!sel) {
      say('Select orphans first: tick rows, or \u201cAll ' + fmt(total) + ' matching\u201d.', true);
      return;
    }
    pending = sel;
    preview.disabled = true;
    say('Preparing the preview\u2026');
    let res;
    try {
      res = await api('POST', '/api/scans/' + scanId + '/purge', body(true));
    } finally {
      preview.disabled = !canWrite;
    }
    if (!res.ok) {
      pending = null;
      refused(res);
      return;
    }
    say('Preview: ' + fmt(res.json.count) + ' to queue, ' + mb(res.json.size_mb) + ' MB.');
    show(res.json);
    opener = preview;
    dialog.showModal();
    // The safe choice has the focus: Enter or Space on it only closes the dialog.
    cancel.focus();
  }

  async function onConfirm() {
    if (!pending || !canWrite) return;
    confirm.disabled = true;
    let res;
    try {
      res = await api('POST', '/api/scans/' + scanId + '/purge', body(false));
    } finally {
      confirm.disabled = !canWrite;
    }
    dialog.close();
    if (!res.ok) {
      refused(res);
      return;
    }
    const q = res.json;
    say('Queued ' + fmt(q.queued) + ' for deletion.');
    const more = [];
    if (q.already_queued) more.push(fmt(q.already_queued) + ' were queued already');
    if (q.held) more.push(fmt(q.held) + ' are held until older than min_age');
    if (q.skipped) more.push(fmt(q.skipped) + ' were not orphans of this scan');
    result.textContent = more.length ? more.join('; ') + '. The Queue page shows them.' : 'The Queue page shows them.';
    pending = null;
    for (const b of rows()) b.checked = false;
    if (allMatching) allMatching.checked = false;
    if (allowMass) allowMass.checked = false;
    update();
  }

  document.addEventListener('change', (e) => {
    const t = e.target;
    if (t === selectPage) {
      for (const b of rows()) b.checked = selectPage.checked;
    } else if (t === allMatching) {
      // "All N matching" stands for the filter; the rows' own ticks then say nothing.
      for (const b of rows()) b.disabled = allMatching.checked;
      if (selectPage) selectPage.disabled = allMatching.checked;
    }
    update();
  });
  preview.addEventListener('click', onPreview);
  confirm.addEventListener('click', onConfirm);
  cancel.addEventListener('click', () => dialog.close());
  // Escape closes a modal <dialog> by itself; either way the focus goes back where it was.
  dialog.addEventListener('close', () => {
    if (opener && typeof opener.focus === 'function') opener.focus();
    opener = null;
  });
  update();
})();
