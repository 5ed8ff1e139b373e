// The dashboard's story in a real Chromium, driven by playwright-core, against a running
// `assetgc serve` whose store was scanned (tests/dashboard.rs sets it up and runs this file).
//
// Environment: BASE_URL (http://127.0.0.1:PORT), WRITE_TOKEN, READ_TOKEN, SCREENSHOTS (a folder),
// NODE_PATH (the node_modules holding playwright-core and axe-core), CHROMIUM (default
// /usr/bin/chromium). Each step prints PASS or FAIL with why; the exit code is 1 when any failed.
//
// Steps go on after a failure where they can, so that one run says everything that is wrong;
// a step whose footing is gone (no login) stops the run.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

import { DESKTOP, checkA11y, shoot } from './pages.mjs';
import { Api, assert, eq, eventually } from './util.mjs';

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`e2e: ${name} is not set (tests/dashboard.rs sets it)`);
    process.exit(2);
  }
  return v;
}

const BASE = need('BASE_URL').replace(/\/$/, '');
const WRITE = need('WRITE_TOKEN');
const READ = need('READ_TOKEN');
const SHOTS = need('SCREENSHOTS');
const MODULES = need('NODE_PATH').split(path.delimiter)[0];
const CHROMIUM = process.env.CHROMIUM || process.env.ASSETGC_TEST_CHROMIUM || '/usr/bin/chromium';

// ES modules ignore NODE_PATH: resolve the packages from the folder it names.
const require = createRequire(path.join(MODULES, 'e2e-resolver.js'));
const { chromium } = require('playwright-core');
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

// A hung page must not hang the test run.
const WATCHDOG_MS = Number(process.env.E2E_TIMEOUT_MS || 300_000);
setTimeout(() => {
  console.error(`FAIL the whole run: still going after ${WATCHDOG_MS / 1000} s`);
  process.exit(1);
}, WATCHDOG_MS).unref();

fs.mkdirSync(SHOTS, { recursive: true });

// A promise a failed step left behind must not end the run before the summary.
process.on('unhandledRejection', (e) => console.log(`  (a promise left behind failed: ${e && e.message ? e.message.split('\n')[0] : e})`));

const api = new Api(BASE, WRITE);
const results = [];
// What the browser reported that no step looks for: script errors, CSP refusals.
const browserErrors = [];

class Stop extends Error {}

async function step(name, fn, { fatal = false } = {}) {
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`PASS ${name} (${Date.now() - t0} ms)`);
    return true;
  } catch (e) {
    const why = (e && e.message ? e.message : String(e)).replace(/\x1b\[[0-9;]*m/g, '').split('\n').slice(0, 12).join('\n      ');
    results.push({ name, ok: false, why });
    console.log(`FAIL ${name}: ${why}`);
    if (fatal) throw new Stop(name);
    return false;
  }
}

function watch(page, who) {
  page.on('pageerror', (e) => browserErrors.push(`${who} ${page.url()}: uncaught ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    if (m.type() === 'error' && /Content Security Policy|Refused to (execute|apply|load)/i.test(text)) {
      browserErrors.push(`${who} ${page.url()}: ${text}`);
    } else if (m.type() === 'error') {
      const from = m.location() && m.location().url ? ` [${m.location().url.replace(BASE, '')}]` : '';
      console.log(`  (console ${who} ${new URL(page.url()).pathname}: ${text}${from})`);
    }
  });
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/assets/') && r.status() !== 200) {
      browserErrors.push(`${who}: ${u.pathname} answered ${r.status()}`);
    }
  });
}

const LAUNCH_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/// The raw value a figure carries.
async function dataValue(page, selector) {
  const el = page.locator(selector).first();
  await el.waitFor({ state: 'attached', timeout: 3_000 });
  const v = await el.getAttribute('data-value');
  assert(v !== null, `${selector} has no data-value`);
  return v;
}

/// A queue stat's element that carries its raw value (on the element or a child of it).
function stat(name) {
  return `[data-stat="${name}"][data-value], [data-stat="${name}"] [data-value]`;
}

async function statusText(page) {
  return ((await page.locator('#status').textContent()) || '').trim();
}

/// Waits until #status says something matching `re` (a RegExp, or a test on the text), as an error
/// or not; its text. Text and class are read together: a status that changes between two reads
/// must not pass as one it never was.
async function waitStatus(page, re, { error = false, timeout = 10_000 } = {}) {
  const matches = typeof re === 'function' ? re : (t) => re.test(t);
  let last = { text: '', isError: false };
  await eventually(async () => {
    last = await page.locator('#status').evaluate((e) => ({ text: (e.textContent || '').trim(), isError: e.classList.contains('error') }));
    return matches(last.text) && last.isError === error;
  }, timeout, () => `#status never said ${re}${error ? ' as an error' : ''}; it says ${JSON.stringify(last.text)}${last.isError ? ' (as an error)' : ''}`);
  return last.text;
}

async function login(page, token, { keyboard }) {
  await page.goto(`${BASE}/login`);
  const field = page.getByLabel('API token');
  await field.fill(token);
  if (keyboard) {
    await field.press('Enter');
  } else {
    await page.getByRole('button', { name: 'Log in' }).click();
  }
  await page.waitForURL(/\/overview$/);
}

async function rowKeys(page, table) {
  return page.locator(`table${table} tbody tr[data-key]`).evaluateAll((rows) => rows.map((r) => r.dataset.key));
}

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
  const audited = async (page, name) => {
    await step(`screenshots of ${name} (1280x800, 390x844)`, () => shoot(page, SHOTS, name));
    await step(`accessibility of ${name} (axe: no serious or critical violation)`, () => checkA11y(page, axeSource, name));
  };
  try {
    // ---- the API's view, to compare the pages with
    let scan;
    await step('the API has the seeded scan', async () => {
      const list = await api.get('/api/scans?limit=100');
      const complete = list.items.filter((s) => s.state === 'complete').sort((a, b) => b.id - a.id);
      assert(complete.length > 0, `no complete scan: ${JSON.stringify(list)}`);
      scan = await api.get(`/api/scans/${complete[0].id}`);
      scan.id = complete[0].id;
      const s = scan.summary;
      // 12 + 12 objects in media, 40 + 80 in bulk; 5 rows lost their file, 3 of them ACTIVE.
      eq(s.objects_scanned, 144, 'objects_scanned');
      eq(s.valid, 52, 'valid');
      eq(s.orphans, 92, 'orphans');
      eq(s.missing, 5, 'missing');
      eq(s.missing_active, 3, 'missing_active');
    }, { fatal: true });

    const ctx = await browser.newContext({ viewport: DESKTOP });
    const page = await ctx.newPage();
    page.setDefaultTimeout(5_000);
    watch(page, 'write');

    // ---- login
    await step('the login page has a labelled token field and a Log in button', async () => {
      await page.goto(`${BASE}/login`);
      await page.getByLabel('API token').waitFor();
      await page.getByRole('button', { name: 'Log in' }).waitFor();
    });
    await audited(page, 'login');
    await step('a wrong token is refused on the login page', async () => {
      await page.getByLabel('API token').fill('not-a-token');
      await page.getByRole('button', { name: 'Log in' }).click();
      await page.getByRole('alert').filter({ hasText: 'not valid' }).waitFor();
      assert(/\/login/.test(page.url()), `still on the login page, not ${page.url()}`);
    });
    await step('log in with the write token (keyboard: type, Enter)', () => login(page, WRITE, { keyboard: true }), { fatal: true });
    await step('the session cookie is HttpOnly, SameSite=Strict, not Secure over http', async () => {
      const cookies = await ctx.cookies(BASE);
      const c = cookies.find((x) => x.name === 'assetgc_session');
      assert(c, `no assetgc_session cookie: ${JSON.stringify(cookies)}`);
      eq(c.httpOnly, true, 'httpOnly');
      eq(c.sameSite, 'Strict', 'sameSite');
      eq(c.secure, false, 'secure');
      const seen = await page.evaluate(() => document.cookie);
      assert(!seen.includes('assetgc_session'), `scripts can read the cookie: ${seen}`);
    });

    // ---- overview
    await step('overview: every figure equals the API\'s', async () => {
      await page.goto(`${BASE}/overview`);
      const s = scan.summary;
      const expected = {
        scan_id: scan.id,
        objects_scanned: s.objects_scanned,
        valid: s.valid,
        valid_percent: Math.round((s.valid * 1000) / s.objects_scanned) / 10,
        orphans: s.orphans,
        orphan_bytes: s.orphan_bytes,
        missing: s.missing,
        missing_active: s.missing_active,
        missing_deleted: s.missing - s.missing_active,
      };
      const wrong = [];
      for (const [name, want] of Object.entries(expected)) {
        const sel = `[data-figure="${name}"][data-value], [data-figure="${name}"] [data-value]`;
        let got;
        try {
          got = await dataValue(page, sel);
        } catch (e) {
          wrong.push(`${name}: ${e.message.split('\n')[0]}`);
          continue;
        }
        const ok = name === 'valid_percent' ? Math.abs(Number(got) - want) < 0.05 : Number(got) === want;
        if (!ok) wrong.push(`${name}: page ${JSON.stringify(got)}, API ${want}`);
      }
      assert(wrong.length === 0, `figures differ:\n${wrong.join('\n')}`);
      const mb = await page.locator('[data-figure="orphan_bytes"]').innerText();
      assert(/MB/.test(mb), `orphan_bytes is shown in MB: ${JSON.stringify(mb)}`);
    });
    await step('overview: no API-metered stores, a trend chart with its data table', async () => {
      const budget = await page.locator('#budget').innerText();
      assert(/No API-metered stores/.test(budget), `#budget: ${JSON.stringify(budget)}`);
      const svg = page.locator('#trend svg[role="img"]');
      await svg.waitFor();
      assert(await svg.locator('title').count() > 0, 'the trend chart has a <title>');
      assert(await svg.locator('desc').count() > 0, 'the trend chart has a <desc>');
      const rows = await page.locator('table#trend-data tbody tr').count();
      assert(rows >= 1, `#trend-data has ${rows} rows`);
      const text = await page.locator('table#trend-data').innerText();
      assert(text.includes(String(scan.id)), `#trend-data names scan ${scan.id}: ${text}`);
    });
    await audited(page, 'overview');

    // ---- findings: select two orphans and queue them
    const picked = [];
    await step('findings: filter orphans by prefix tmp/', async () => {
      await page.goto(`${BASE}/findings`);
      await page.getByLabel('Scan').waitFor();
      await page.locator('form#filters').getByLabel('Key prefix').fill('tmp/');
      await page.locator('form#filters').getByRole('button', { name: 'Apply' }).click();
      await page.waitForURL(/prefix=tmp/);
      const want = await api.get(`/api/scans/${scan.id}/orphans?prefix=tmp%2F&limit=1000`);
      eq(want.total, 9, 'the API counts 9 tmp/ orphans');
      eq(Number(await dataValue(page, '#total')), want.total, '#total');
      const keys = await rowKeys(page, '#orphans');
      assert(keys.length === 9, `table#orphans shows ${keys.length} rows, not 9: ${keys}`);
      assert(keys.every((k) => k.startsWith('tmp/')), `rows outside tmp/: ${keys}`);
      await page.getByRole('link', { name: /Orphaned files \(/ }).waitFor();
      await page.getByRole('link', { name: /Records with missing files \(/ }).waitFor();
    });
    await step('findings: select two rows, Preview shows 2', async () => {
      const keys = await rowKeys(page, '#orphans');
      assert(keys.length >= 2, `two rows to select, found ${keys.length}`);
      picked.push(keys[0], keys[1]);
      for (const k of picked) await page.getByLabel(`Select ${k}`, { exact: true }).check();
      await page.getByRole('button', { name: 'Preview deletion' }).click();
      const dialog = page.locator('dialog#preview-dialog');
      await dialog.waitFor({ state: 'visible' });
      const text = await dialog.innerText();
      assert(/(^|\D)2(\D|$)/.test(text), `the preview counts 2: ${JSON.stringify(text)}`);
      for (const k of picked) assert(text.includes(k), `the preview names ${k}: ${JSON.stringify(text)}`);
      await shoot(page, SHOTS, 'findings-preview', { mobile: false });
    });
    await step('findings: Queue for deletion says "Queued 2 for deletion."', async () => {
      await page.getByRole('button', { name: 'Queue for deletion' }).click();
      await waitStatus(page, /Queued 2 for deletion\./);
      const stats = await api.get('/api/cleanup/stats');
      eq(stats.stats.total_pending, 2, 'the API\'s total_pending');
    });
    await audited(page, 'findings');
    await step('findings: the missing tab lists the 5 rows with missing files', async () => {
      // Without the tmp/ filter, which the tabs keep.
      await page.goto(`${BASE}/findings?scan=${scan.id}`);
      await page.getByRole('link', { name: /Records with missing files \(/ }).click();
      await page.waitForURL(/kind=missing/);
      const keys = await rowKeys(page, '#missing');
      eq(keys.length, 5, `rows of table#missing (${keys})`);
      eq(Number(await dataValue(page, '#total')), 5, '#total');
    });

    // ---- queue
    // The queue's steps need two queued orphans even when the findings page could not queue them:
    // then they are queued through the API, so that the queue page is still tested on its own.
    if ((await api.get('/api/cleanup/stats')).stats.total_pending === 0) {
      const keys = ['tmp/00.jpg', 'tmp/01.jpg'];
      const r = await api.call('POST', `/api/scans/${scan.id}/purge`, { keys, dry_run: false });
      if (r.status === 202) {
        picked.splice(0, picked.length, ...keys);
        console.log(`  (note: the findings page queued nothing; ${keys.join(' and ')} were queued through the API for the queue's steps)`);
      }
    }
    let before;
    await step('queue: the two are pending, with Retry and Drop', async () => {
      await page.goto(`${BASE}/queue`);
      before = await api.get('/api/cleanup/stats');
      eq(Number(await dataValue(page, stat('total_pending'))), before.stats.total_pending, 'total_pending');
      eq(Number(await dataValue(page, stat('total_failed'))), before.stats.total_failed, 'total_failed');
      const text = await page.locator('table#pending').innerText();
      for (const k of picked) assert(text.includes(k), `table#pending lists ${k}: ${text}`);
      const ids = await page.locator('table#pending tr[data-id]').evaluateAll((rs) => rs.map((r) => r.dataset.id));
      eq(ids.length, 2, 'rows in table#pending');
      for (const id of ids) {
        await page.locator(`button[data-retry="${id}"]`).waitFor({ state: 'attached' });
        await page.locator(`button[data-drop="${id}"]`).waitFor({ state: 'attached' });
      }
    });
    await audited(page, 'queue');
    await step('queue: "Run queue now" deletes them; pending empties and the stats change', async () => {
      // Caught here so that a click that never happens leaves no promise rejected unheard.
      const answered = page
        .waitForResponse((r) => new URL(r.url()).pathname.startsWith('/api/cleanup/run') && r.request().method() === 'POST')
        .catch((e) => e);
      let said = '';
      const listen = eventually(async () => {
        said = await statusText(page).catch(() => said);
        return /Processed 2: 2 deleted, 0 failed, 0 remaining\./.test(said);
      }, 8_000).then(() => true, () => false);
      await page.getByRole('button', { name: 'Run queue now' }).click();
      const r = await answered;
      if (r instanceof Error) throw new Error(`no POST /api/cleanup/run after the click: ${r.message}`);
      eq(r.status(), 200, 'POST /api/cleanup/run');
      const body = await r.json();
      eq(body.processed, 2, 'processed');
      eq(body.deleted, 2, 'deleted');
      const sawStatus = await listen;
      await eventually(async () => {
        await page.waitForLoadState();
        const v = await page.locator(stat('total_pending')).first().getAttribute('data-value').catch(() => null);
        return v === '0';
      }, 10_000, () => 'total_pending on the page never became 0');
      const text = await page.locator('table#pending').innerText().catch(() => '');
      for (const k of picked) assert(!text.includes(k), `${k} still pending: ${text}`);
      const after = await api.get('/api/cleanup/stats');
      eq(after.stats.total_pending, 0, 'the API\'s total_pending');
      assert(before.stats.total_pending === 2, 'the stats changed from 2 pending');
      assert(sawStatus, `#status said ${JSON.stringify(said)}, not "Processed 2: 2 deleted, 0 failed, 0 remaining."`);
    });

    // ---- jobs
    await step('jobs: "Run now" on detect says it started, and the run succeeds', async () => {
      await page.goto(`${BASE}/jobs`);
      const row = page.locator('table#jobs tr[data-job="detect"]');
      await row.waitFor();
      const text = await row.innerText();
      assert(text.includes('0 4 * * *'), `the row shows the schedule: ${text}`);
      await page.locator('button[data-run="detect"]').click();
      const said = await waitStatus(page, /Job detect started \(run \d+\)\./);
      const run = Number(said.match(/run (\d+)/)[1]);
      let last;
      await eventually(async () => {
        const runs = await api.get('/api/jobs/detect/runs');
        last = runs.items.find((x) => x.id === run);
        return last && last.status !== 'running';
      }, 90_000, () => `run ${run} did not end: ${JSON.stringify(last)}`);
      eq(last.status, 'succeeded', `run ${run}'s status (${JSON.stringify(last)})`);
      await page.reload();
      const after = await page.locator('table#jobs tr[data-job="detect"]').innerText();
      assert(/succeeded/i.test(after), `the row shows the run succeeded: ${after}`);
    });
    await audited(page, 'jobs');

    // ---- the mass-deletion guard's refusal is shown, not swallowed
    await step('findings: "All 80 matching" in store bulk, Preview: the 409 is shown in #status', async () => {
      const pendingBefore = (await api.get('/api/cleanup/stats')).stats.total_pending;
      const refused = await api.call('POST', `/api/scans/${scan.id}/purge`, { filter: { store: 'bulk' }, dry_run: true });
      eq(refused.status, 409, `the API refuses a purge of store bulk (${JSON.stringify(refused.json)})`);
      await page.goto(`${BASE}/findings?scan=${scan.id}&kind=orphans&store=bulk`);
      eq(Number(await dataValue(page, '#total')), 80, '#total');
      await page.getByLabel(/All 80 matching/).check();
      await page.getByRole('button', { name: 'Preview deletion' }).click();
      const said = await waitStatus(page, (t) => t.includes(refused.json.error), { error: true });
      assert(said.includes(refused.json.error), `#status carries the API's message ${JSON.stringify(refused.json.error)}: ${JSON.stringify(said)}`);
      assert(/allow-mass-delete/.test(said), `#status names --allow-mass-delete: ${JSON.stringify(said)}`);
      // When a page opens its dialog anyway, confirming it must be refused the same way.
      const dialog = page.locator('dialog#preview-dialog');
      if (await dialog.isVisible()) {
        await page.getByRole('button', { name: 'Queue for deletion' }).click();
        const again = await waitStatus(page, (t) => t.includes(refused.json.error), { error: true });
        assert(again.includes(refused.json.error), `the refused queueing shows the API's message: ${JSON.stringify(again)}`);
      }
      const stats = await api.get('/api/cleanup/stats');
      eq(stats.stats.total_pending, pendingBefore, 'nothing more queued');
    });

    // ---- audit
    await step('audit: the two deletions are there, and the key filter works', async () => {
      await page.goto(`${BASE}/audit`);
      const text = await page.locator('table#audit').innerText();
      for (const k of picked) assert(text.includes(k), `table#audit names ${k}`);
      await page.locator('form#audit-filter').getByLabel('Key').fill(picked[0]);
      await page.locator('form#audit-filter').getByRole('button', { name: 'Filter' }).click();
      await page.waitForURL(/key=/);
      const rows = await page.locator('table#audit tbody tr').allInnerTexts();
      assert(rows.length >= 1, 'rows for the key');
      for (const r of rows) assert(r.includes(picked[0]), `a row of another key: ${r}`);
    });
    await audited(page, 'audit');

    // ---- logout
    await step('log out: back at /login, and the pages want a login again', async () => {
      await page.getByRole('button', { name: 'Log out' }).click();
      await page.waitForURL(/\/login/);
      await page.goto(`${BASE}/overview`);
      assert(/\/login\?next=/.test(page.url()), `after logout /overview goes to the login, not ${page.url()}`);
    });
    await ctx.close();

    // ---- a read token
    const rctx = await browser.newContext({ viewport: DESKTOP });
    const rpage = await rctx.newPage();
    rpage.setDefaultTimeout(5_000);
    watch(rpage, 'read');
    await step('read token: log in (click)', () => login(rpage, READ, { keyboard: false }), { fatal: true });
    await step('read token: action buttons are disabled, with the read-only note', async () => {
      const note = 'Your token is read-only: changes are refused.';
      const checks = [
        ['/queue', ['#run-queue']],
        [`/findings?scan=${scan.id}`, ['#preview']],
        ['/jobs', ['button[data-run="detect"]']],
      ];
      const wrong = [];
      for (const [where, buttons] of checks) {
        await rpage.goto(`${BASE}${where}`);
        if (!(await rpage.getByText(note).first().isVisible().catch(() => false))) wrong.push(`${where}: no visible "${note}"`);
        for (const b of buttons) {
          const el = rpage.locator(b).first();
          if ((await el.count()) === 0) wrong.push(`${where}: no ${b}`);
          else if (!(await el.isDisabled())) wrong.push(`${where}: ${b} is not disabled`);
        }
      }
      assert(wrong.length === 0, wrong.join('\n'));
    });
    await step('read token: assetgc.api POST purge from the page answers 403', async () => {
      await rpage.goto(`${BASE}/findings?scan=${scan.id}`);
      await rpage.waitForFunction(() => window.assetgc && typeof window.assetgc.api === 'function');
      const pendingBefore = (await api.get('/api/cleanup/stats')).stats.total_pending;
      const res = await rpage.evaluate(
        ({ id }) => window.assetgc.api('POST', `/api/scans/${id}/purge`, { keys: ['tmp/05.jpg'], dry_run: false }),
        { id: scan.id },
      );
      eq(res.status, 403, `the answer (${JSON.stringify(res)})`);
      eq(res.ok, false, 'ok');
      const stats = await api.get('/api/cleanup/stats');
      eq(stats.stats.total_pending, pendingBefore, 'nothing more queued');
    });
    await rctx.close();

    await step('the browser saw no script error and no CSP refusal', async () => {
      assert(browserErrors.length === 0, browserErrors.join('\n'));
    });
  } catch (e) {
    if (!(e instanceof Stop)) {
      results.push({ name: 'the run', ok: false, why: e.stack || String(e) });
      console.log(`FAIL the run: ${e.stack || e}`);
    } else {
      console.log(`stopped: "${e.message}" failed and the steps after it need it`);
    }
  } finally {
    await browser.close().catch(() => {});
  }

  const failed = results.filter((r) => !r.ok);
  console.log(`\n${results.length - failed.length} of ${results.length} steps passed; screenshots in ${SHOTS}`);
  if (failed.length) {
    console.log(`failed:\n${failed.map((f) => `  - ${f.name}: ${f.why}`).join('\n')}`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error(`FAIL the run: ${e.stack || e}`);
  process.exit(1);
});
