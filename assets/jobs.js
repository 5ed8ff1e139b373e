// The jobs page: "Run now" starts a run through the JSON API, then the page reloads a few
// seconds later so the new run shows. The result is kept across the reload so it stays announced.
(function () {
  'use strict';
  const FLASH = 'assetgc.jobs.flash';
  const g = window.assetgc;

  async function run(b) {
    const name = b.dataset.run;
    b.disabled = true;
    let res;
    try {
      res = await g.api('POST', '/api/jobs/' + encodeURIComponent(name) + '/run', {});
    } catch (e) {
      b.disabled = false;
      g.say('The server could not be reached: ' + e.message, true);
      return;
    }
    if (!res.ok) {
      b.disabled = false;
      g.say(g.why(res), true);
      return;
    }
    const text = 'Job ' + name + ' started (run ' + ((res.json && res.json.run_id) || '?') + ').';
    g.say(text, false);
    try { sessionStorage.setItem(FLASH, text); } catch (_) { /* private mode: no flash */ }
    setTimeout(function () { location.reload(); }, 3000);
  }

  document.addEventListener('DOMContentLoaded', function () {
    let flash = null;
    try { flash = sessionStorage.getItem(FLASH); sessionStorage.removeItem(FLASH); } catch (_) { flash = null; }
    if (flash) g.say(flash, false);
    document.querySelectorAll('button[data-run]').forEach(function (b) {
      b.addEventListener('click', function () { run(b); });
    });
  });
})();
