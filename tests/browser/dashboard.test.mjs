// The live dashboard the Worker serves at `/`, in Debian's Chromium: an
// accident published over HTTP shows within 2 s and leaves when resolved.
// And the client's `useChannel` React hook on a page of its own.

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { launchChromium, publish, ROOT, startGateway, strictPage, token } from './gateway.mjs';

let gw;
let browser;

before(async () => {
  [gw, browser] = await Promise.all([startGateway('dashboard'), launchChromium()]);
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

test('the dashboard shows a published accident within 2 s and drops it when resolved', async () => {
  const errors = [];
  const page = await strictPage(browser, errors);
  const viewer = token({ sub: 'dashboard', scope: 'subscribe', channels: ['*'] });
  await page.goto(`${gw.http}/?token=${viewer}`);
  await page.waitForSelector('#status.open', { timeout: 15_000 });
  await publish(gw, {
    channel: 'traffic.flow',
    type: 'traffic.flow',
    data: {
      camera_id: 'CAM_001', location: { lat: 10.7769, lon: 106.7009 }, intensity: 72,
      average_speed: 21.5, vehicle_types: { car: 20, motorcycle: 60, truck: 3, bus: 1 },
      occupancy: 0.72, congestion_level: 'high',
    },
  });
  await page.waitForSelector('[data-camera="CAM_001"].high', { timeout: 5_000 });

  const id = `ACC_DASH_${process.pid}_${Date.now()}`;
  const sent = Date.now();
  await publish(gw, {
    channel: 'accidents',
    type: 'accidents.new',
    data: { id, location: { lat: 10.7769, lon: 106.7009 }, severity: 'severe', confidence: 0.9, camera_id: 'CAM_001', vehicles_involved: 2 },
  });
  await page.waitForSelector(`#accidents [data-id="${id}"]`, { timeout: 2_000 });
  const shownAfter = Date.now() - sent;
  await publish(gw, { channel: 'accidents', type: 'accidents.resolved', data: { id, resolution: 'cleared', duration: 12 } });
  await page.waitForSelector(`#accidents [data-id="${id}"]`, { state: 'detached', timeout: 2_000 });

  await publish(gw, { channel: 'alerts', type: 'alert', data: { id: `ALERT_${id}`, priority: 'high', category: 'accident', title: 'Serious Accident', message: 'Cleared soon' } });
  await page.waitForSelector(`[data-alert="ALERT_${id}"]`, { timeout: 2_000 });
  const dir = path.join(ROOT, 'tests/.state');
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, 'dashboard.png'), fullPage: true });
  assert.deepEqual(errors, [], 'no page errors');
  assert.ok(shownAfter < 2000, `shown after ${shownAfter} ms`);
});

const umd = (pkg, file) => readFileSync(path.join(ROOT, 'node_modules', pkg, 'umd', file), 'utf8');

test('useChannel keeps the filtered latest-per-key state of a channel in a React page', async () => {
  const errors = [];
  const page = await strictPage(browser, errors);
  const viewer = token({ sub: 'hook', scope: 'subscribe', channels: ['*'] });
  const files = {
    '/__react.js': ['application/javascript', umd('react', 'react.production.min.js')],
    '/__react-dom.js': ['application/javascript', umd('react-dom', 'react-dom.production.min.js')],
    '/__react-shim.js': ['application/javascript', 'const R = window.React; export const useState = R.useState; export const useEffect = R.useEffect; export default R;'],
    '/__hook.html': ['text/html', `<!doctype html><html><body>
      <script src="/__react.js"></script><script src="/__react-dom.js"></script>
      <script type="importmap">{"imports": {"react": "/__react-shim.js"}}</script>
      <div id="root"></div>
      <script type="module">
        import { UipClient } from '/client/index.js';
        import { useChannel } from '/client/react.js';
        const client = new UipClient({ url: location.origin, token: ${JSON.stringify(viewer)} });
        const h = React.createElement;
        function App() {
          const { items, status } = useChannel(client, 'accidents', { severity: ['severe'] });
          return h('div', { id: 'app', 'data-status': status },
            items.map((e) => h('p', { key: e.data.id, 'data-id': e.data.id }, e.data.id + ' ' + (e.data.status ?? ''))));
        }
        ReactDOM.createRoot(document.getElementById('root')).render(h(App));
      </script></body></html>`],
  };
  for (const [file, [type, body]] of Object.entries(files)) {
    await page.route(`${gw.http}${file}`, (route) => route.fulfill({ contentType: type, body }));
  }
  await page.goto(`${gw.http}/__hook.html`);
  await page.waitForSelector('#app[data-status="open"]', { state: 'attached', timeout: 15_000 });
  const id = (n) => `ACC_HOOK_${process.pid}_${n}`;
  await publish(gw, { channel: 'accidents', type: 'accidents.new', data: { id: id(1), severity: 'severe' } });
  await page.waitForSelector(`[data-id="${id(1)}"]`, { timeout: 2_000 });
  await publish(gw, { channel: 'accidents', type: 'accidents.new', data: { id: id(2), severity: 'minor' } });
  await publish(gw, { channel: 'accidents', type: 'accidents.update', data: { id: id(1), severity: 'severe', status: 'investigating' } });
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.includes('investigating'), `[data-id="${id(1)}"]`, { timeout: 2_000 });
  assert.equal(await page.locator(`[data-id="${id(2)}"]`).count(), 0, 'filtered out');
  assert.equal(await page.locator(`[data-id="${id(1)}"]`).count(), 1, 'one entry per key');
  await publish(gw, { channel: 'accidents', type: 'accidents.resolved', data: { id: id(1), severity: 'severe' } });
  await page.waitForSelector(`[data-id="${id(1)}"]`, { state: 'detached', timeout: 2_000 });
  assert.deepEqual(errors, [], 'no page errors');
});
