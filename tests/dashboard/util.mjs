// Small helpers of the dashboard's browser test: assertions that say what differed, polling,
// and the JSON API called from node with a bearer token (the figures the pages must agree with).

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

export function eq(got, want, what) {
  if (got !== want) throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

/// Calls `fn` until it answers true, for at most `timeout` ms; `why()` says what never happened.
export async function eventually(fn, timeout, why = () => `not within ${timeout} ms`) {
  const deadline = Date.now() + timeout;
  for (;;) {
    let ok = false;
    try {
      ok = await fn();
    } catch (_) {
      ok = false;
    }
    if (ok) return;
    if (Date.now() > deadline) throw new Error(why());
    await new Promise((r) => setTimeout(r, 150));
  }
}

export class Api {
  constructor(base, token) {
    this.base = base;
    this.token = token;
  }

  /// Any call: `{status, json}`.
  async call(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token}`, Accept: 'application/json' };
    const init = { method, headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(this.base + path, init);
    } catch (e) {
      throw new Error(`${method} ${this.base}${path}: ${e.message}${e.cause ? ` (${e.cause.message || e.cause})` : ''}`);
    }
    const text = await r.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch (_) {
      json = null;
    }
    return { status: r.status, json, text };
  }

  /// A GET that must answer 200: its JSON.
  async get(path) {
    const r = await this.call('GET', path);
    if (r.status !== 200) throw new Error(`GET ${path} answered ${r.status}: ${r.text.slice(0, 300)}`);
    return r.json;
  }
}
