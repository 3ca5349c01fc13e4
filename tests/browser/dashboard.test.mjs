// The live dashboard the Worker serves at `/`, in Debian's Chromium: an
// accident published over HTTP shows within 2 s and leaves when resolved.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
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
