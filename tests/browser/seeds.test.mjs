// The seeds' own clients in a real browser (Debian's Chromium through
// playwright-core) against a real `wrangler dev`: the `001_…` React hook
// stays connected past the keep-alive interval and still shows a later event,
// and refusals end as Chromium sees them within 1 s of their reason frame.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { launchChromium, publish, ROOT, startGateway, strictPage, token } from './gateway.mjs';

// SPEC's 45 s / 90 s shortened 15-fold, ratios kept.
const KEEPALIVE_S = 3;
const HOLD_MS = KEEPALIVE_S * 3000 + 1500;

let gw;
let browser;

before(async () => {
  [gw, browser] = await Promise.all([
    startGateway('seeds', { KEEPALIVE_S: String(KEEPALIVE_S), HEARTBEAT_TIMEOUT_S: '6' }),
    launchChromium(),
  ]);
});

after(async () => {
  await browser?.close();
  gw?.stop();
});

const umd = (pkg, file) => readFileSync(path.join(ROOT, 'node_modules', pkg, 'umd', file), 'utf8');

/** Records every socket the page opens: frames with their arrival times, and the close. */
const RECORDER = `
  window.__ws = { frames: [], closed: null };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => window.__ws.frames.push([performance.now(), e.data]));
      this.addEventListener('close', (e) => { window.__ws.closed = { code: e.code, at: performance.now() }; });
    }
  };
`;

/** The `001_…` frontend hook exactly as the seed shows it, with its URL changed. */
function hookPage(url) {
  return `<!doctype html><html><body><div id="root"></div>
<script>${RECORDER}</script>
<script>${umd('react', 'react.development.js')}</script>
<script>${umd('react-dom', 'react-dom.development.js')}</script>
<script>
const { useState, useEffect, useRef } = React;
const useWebSocket = () => {
  const [data, setData] = useState(null);
  const wsRef = useRef(null);

  useEffect(() => {
    const ws = new WebSocket(${JSON.stringify(url)});
    wsRef.current = ws;

    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);

      switch (message.type) {
        case 'SNAPSHOT':
          setData(message.data);
          break;
        case 'UPDATE':
          setData(prev => ({
            ...prev,
            [message.topic]: message.data
          }));
          break;
        case 'ALERT':
          // Handle alert
          break;
      }
    };

    return () => ws.close();
  }, []);

  return data;
};

function App() {
  const data = useWebSocket();
  const ids = ((data && data.accidents) || []).map((a) => a.id);
  return React.createElement('ul', { id: 'accidents', 'data-ready': data ? 'yes' : 'no' },
    ids.map((id) => React.createElement('li', { key: id }, id)));
}
ReactDOM.createRoot(document.getElementById('root')).render(React.createElement(App));
</script></body></html>`;
}

test('the 001 hook left alone past the keep-alive interval still shows a later event', async () => {
  const errors = [];
  const page = await strictPage(browser, errors);
  const url = `${gw.ws}/ws?dialect=001&token=${token({ sub: 'dashboard' })}`;
  await page.setContent(hookPage(url));
  await page.waitForSelector('#accidents[data-ready="yes"]', { state: 'attached', timeout: 10_000 });
  // Held as a person would leave a dashboard open: nothing is sent.
  await new Promise((r) => setTimeout(r, HOLD_MS));
  const ws = await page.evaluate(() => window.__ws);
  assert.equal(ws.closed, null, 'the silent hook is still connected');
  const pongs = ws.frames.filter(([, f]) => JSON.parse(f).type === 'PONG').map(([t]) => t);
  assert.ok(pongs.length >= 3, `expected 3 keep-alives in ${HOLD_MS} ms, got ${pongs.length}`);
  const id = `ACC_BROWSER_${process.pid}_${Date.now()}`;
  await publish(gw, { channel: 'accidents', type: 'accidents.new', data: { id, severity: 'severe' } });
  await page.waitForFunction(
    (want) => [...document.querySelectorAll('#accidents li')].some((li) => li.textContent === want),
    id,
    { timeout: 5000 },
  );
  await page.screenshot({ path: path.join(ROOT, 'tests/.state/browser-001-hook.png') });
  assert.deepEqual(errors, []);
  await page.close();
});

/** Opens `url` in the page, optionally sends `first`, and measures the refusal. */
async function refusal(url, first) {
  const errors = [];
  const page = await strictPage(browser, errors);
  await page.setContent(`<!doctype html><script>${RECORDER}</script>`);
  const seen = await page.evaluate(async ([u, msg]) => {
    const ws = new WebSocket(u);
    if (msg) ws.onopen = () => ws.send(msg);
    await new Promise((resolve) => {
      ws.onclose = resolve;
      setTimeout(resolve, 15_000);
    });
    return window.__ws;
  }, [url, first]);
  await page.close();
  assert.deepEqual(errors, []);
  assert.ok(seen.closed, 'the connection closed');
  const reason = seen.frames.map(([t, f]) => [t, JSON.parse(f)]).find(([, f]) => f.error);
  assert.ok(reason, 'a reason frame came first');
  return { code: seen.closed.code, error: reason[1].error.code, afterMs: seen.closed.at - reason[0] };
}

for (const [name, url, first, error, code] of [
  ['a channel outside the claim on /ws/{channel}', () => `${gw.ws}/ws/traffic.flow?token=${token({ channels: ['alerts'] })}`, null, 'FORBIDDEN', 4003],
  ['a token without scope subscribe on /ws', () => `${gw.ws}/ws?token=${token({ scope: 'publish' })}`, null, 'FORBIDDEN', 4003],
  ['a bad token on /ws', () => `${gw.ws}/ws?token=nonsense`, null, 'AUTH_FAILED', 4001],
  ['an unknown channel', () => `${gw.ws}/ws/nowhere?token=${token({})}`, null, 'CHANNEL_NOT_FOUND', 4004],
  ['a bad auth message on /ws', () => `${gw.ws}/ws`, '{"type":"auth","token":"nonsense"}', 'AUTH_FAILED', 4001],
  ['a bad auth message on /ws/{channel}', () => `${gw.ws}/ws/alerts`, '{"type":"auth","token":"nonsense"}', 'AUTH_FAILED', 4001],
]) {
  test(`Chromium sees ${name} end within 1 s of its reason`, async () => {
    const r = await refusal(url(), first);
    assert.equal(r.error, error);
    assert.equal(r.code, code);
    assert.ok(r.afterMs <= 1000, `onclose came ${Math.round(r.afterMs)} ms after the reason frame`);
  });
}
