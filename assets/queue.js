// The queue page: run the queue, retry and drop entries through the JSON API, then reload so the
// tables show what changed. The result is kept across the reload so it stays announced.
(function () {
  'use strict';
  const FLASH = 'assetgc.queue.flash';
  const g = window.assetgc;

  function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

  function done(text) {
    g.say(text, false);
    try { sessionStorage.setItem(FLASH, text); } catch (_) { /* private mode: no flash */ }
    setTimeout(function () { location.reload(); }, 1200);
  }

  function busy(on) {
    document.querySelectorAll('button[data-retry], button[data-drop], #run-queue, #retry-all-failed, #drop-all-failed')
      .forEach(function (b) {
        if (on) { b.dataset.wasDisabled = b.disabled ? '1' : ''; b.disabled = true; } else { b.disabled = b.dataset.wasDisabled === '1'; }
      });
  }

  async function call(path, body, describe) {
    busy(true);
    let res;
    try {
      res = await g.api('POST', path, body);
    } catch (e) {
      busy(false);
      g.say('The server could not be reached: ' + e.message, true);
      return;
    }
    if (!res.ok) {
      busy(false);
      g.say(g.why(res), true);
      return;
    }
    done(describe(res.json || {}));
  }

  function changed(verb, j) {
    const n = verb === 'Retried' ? (j.retried || 0) : (j.dropped || 0);
    let text = verb + ' ' + plural(n, 'entry', 'entries') + '.';
    if (verb === 'Retried' && j.dropped) {
      text += ' Dropped ' + plural(j.dropped, 'entry', 'entries') + ' whose file is queued again already.';
    }
    if (j.refused) {
      text += ' Left ' + plural(j.refused, 'entry', 'entries') +
        ' as they are: an earlier attempt may have moved the file to the trash; retry them instead.';
    }
    return text;
  }

  function runQueue() {
    call('/api/cleanup/run?batch_size=100', {}, function (j) {
      return 'Processed ' + (j.processed || 0) + ': ' + (j.deleted || 0) + ' deleted, ' +
        (j.failed || 0) + ' failed, ' + (j.remaining || 0) + ' remaining.';
    });
  }

  function retry(body) {
    call('/api/queue/retry', body, function (j) { return changed('Retried', j); });
  }

  // Drop asks first, in a dialog (keyboard: Escape cancels, focus returns to the button).
  let pending = null;
  let opener = null;
  function askDrop(body, text, from) {
    const d = document.getElementById('drop-dialog');
    pending = body;
    opener = from;
    document.getElementById('drop-text').textContent = text;
    d.showModal();
    document.getElementById('cancel-drop').focus();
  }
  function closeDrop() {
    const d = document.getElementById('drop-dialog');
    if (d.open) d.close();
    if (opener) opener.focus();
  }
  function confirmDrop() {
    const body = pending;
    pending = null;
    const d = document.getElementById('drop-dialog');
    if (d.open) d.close();
    if (body) call('/api/queue/drop', body, function (j) { return changed('Dropped', j); });
  }

  function keyOf(id) {
    const k = document.getElementById('key-' + id);
    return k ? k.textContent : ('entry ' + id);
  }

  document.addEventListener('DOMContentLoaded', function () {
    let flash = null;
    try { flash = sessionStorage.getItem(FLASH); sessionStorage.removeItem(FLASH); } catch (_) { flash = null; }
    if (flash) g.say(flash, false);

    const run = document.getElementById('run-queue');
    if (run) run.addEventListener('click', runQueue);
    const ra = document.getElementById('retry-all-failed');
    if (ra) ra.addEventListener('click', function () { retry({ all_failed: true }); });
    const da = document.getElementById('drop-all-failed');
    if (da) {
      da.addEventListener('click', function () {
        const n = (document.querySelector('[data-stat="total_failed"] dd') || {}).dataset;
        const count = n ? Number(n.value) : 0;
        askDrop({ all_failed: true }, 'Drop all ' + plural(count, 'failed entry', 'failed entries') + '?', da);
      });
    }
    document.querySelectorAll('button[data-retry]').forEach(function (b) {
      b.addEventListener('click', function () { retry({ ids: [Number(b.dataset.retry)] }); });
    });
    document.querySelectorAll('button[data-drop]').forEach(function (b) {
      b.addEventListener('click', function () {
        const id = Number(b.dataset.drop);
        askDrop({ ids: [id] }, 'Drop ' + keyOf(id) + ' from the queue?', b);
      });
    });
    const d = document.getElementById('drop-dialog');
    if (d) {
      document.getElementById('confirm-drop').addEventListener('click', confirmDrop);
      document.getElementById('cancel-drop').addEventListener('click', function () { pending = null; closeDrop(); });
      d.addEventListener('cancel', function () { pending = null; if (opener) setTimeout(function () { opener.focus(); }, 0); });
    }
  });
})();
