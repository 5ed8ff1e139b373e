// What the browser test does on every page: screenshots at a desktop and a phone size, and the
// axe-core accessibility rules.

import path from 'node:path';

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/// Full-page screenshots `NAME-1280x800.png` and (unless `mobile: false`) `NAME-390x844.png`.
export async function shoot(page, dir, name, { mobile = true } = {}) {
  await page.setViewportSize(DESKTOP);
  await page.screenshot({ path: path.join(dir, `${name}-1280x800.png`), fullPage: true });
  if (!mobile) return;
  await page.setViewportSize(PHONE);
  const wide = await page.evaluate((w) => {
    const over = (e) => e.getBoundingClientRect().right > w + 1;
    // The deepest elements past the edge: the ones to fix.
    const culprits = [...document.querySelectorAll('body *')]
      .filter((e) => over(e) && ![...e.children].some(over))
      .slice(0, 4)
      .map((e) => {
        const within = e.parentElement && e.parentElement.closest('[id]');
        const me = `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}${e.classList.length ? `.${[...e.classList].join('.')}` : ''}`;
        return `${me}${within ? ` in #${within.id}` : ''} (to ${Math.round(e.getBoundingClientRect().right)}px)`;
      });
    return { width: document.documentElement.scrollWidth, culprits };
  }, PHONE.width);
  if (wide.width > PHONE.width + 1) {
    console.log(`  (note: ${name} is ${wide.width}px wide at ${PHONE.width}px, it scrolls sideways: ${wide.culprits.join(', ')})`);
  }
  await page.screenshot({ path: path.join(dir, `${name}-390x844.png`), fullPage: true });
  await page.setViewportSize(DESKTOP);
}

/// Runs axe-core on the page as it is; fails on any violation of impact serious or critical and
/// prints the others. axe is evaluated through the DevTools protocol rather than added as an
/// inline <script>: the dashboard's CSP (script-src 'self') rightly refuses inline scripts, and
/// the test keeps that CSP in force to catch the pages' own violations.
export async function checkA11y(page, axeSource, name) {
  const present = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!present) await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 6).map((n) => `${n.target.join(' ')}${n.failureSummary ? ` — ${n.failureSummary.replace(/\s+/g, ' ')}` : ''}`),
      more: Math.max(0, v.nodes.length - 6),
    }));
  });
  const line = (v) => `${v.id} (${v.impact}): ${v.help}\n${v.nodes.map((n) => `        at ${n}`).join('\n')}${v.more ? `\n        … and ${v.more} more` : ''}`;
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of violations.filter((x) => !bad.includes(x))) console.log(`  (axe on ${name}, not failing: ${line(v)})`);
  if (bad.length) throw new Error(`axe on ${name}:\n${bad.map(line).join('\n')}`);
}
