// The dashboard's shared script: API calls carry the session's CSRF token, results and errors
// are announced in the page's status region. Page scripts build on `window.assetgc`.
(function () {
  'use strict';
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || '';
  async function api(method, path, body) {
    const opts = { method, headers: { 'Accept': 'application/json' }, credentials: 'same-origin' };
    if (method !== 'GET') {
      opts.headers['X-CSRF-Token'] = csrf();
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body || {});
    }
    const r = await fetch(path, opts);
    let json = null;
    try { json = await r.json(); } catch (_) { json = null; }
    return { ok: r.ok, status: r.status, json };
  }
  function say(text, error) {
    const s = document.getElementById('status');
    if (!s) return;
    s.textContent = text;
    s.classList.toggle('error', !!error);
  }
  // The error an API answer gives, in words for people.
  function why(res) {
    if (res.status === 403) return (res.json && res.json.error) || 'Refused: this token may not change anything.';
    return (res.json && res.json.error) || ('The server answered ' + res.status + '.');
  }
  window.assetgc = { api, say, why, csrf };
})();
