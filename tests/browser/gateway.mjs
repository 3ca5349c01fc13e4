// Shared helpers for the browser tests: start `wrangler dev` on a free port
// (the bundle the suite built), mint HS256 tokens, publish over HTTP, and
// launch Debian's Chromium through playwright-core.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync, openSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SECRET = 'browser-test-secret';
const START_WAIT_MS = 120_000;

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts `wrangler dev` with extra `--var`s; resolves once /healthz answers.
 * `again: gw` restarts a stopped gateway on its port with its state.
 */
export async function startGateway(name, vars = {}, { again } = {}) {
  const port = again ? again.port : await freePort();
  const inspector = await freePort();
  const state = path.join(ROOT, 'tests/.state', `browser-${name}-${process.pid}`);
  if (!again) {
    rmSync(state, { recursive: true, force: true });
    mkdirSync(state, { recursive: true });
  }
  const args = [
    path.join(ROOT, 'tests/common/run-wrangler.sh'), String(process.pid),
    '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspector),
    '--persist-to', state, '--var', `JWT_SECRET:${SECRET}`,
    '--show-interactive-dev-session=false', '--log-level', 'warn',
  ];
  for (const [k, v] of Object.entries(vars)) args.push('--var', `${k}:${v}`);
  const log = openSync(`${state}.log`, 'a');
  const child = spawn('bash', args, {
    cwd: ROOT,
    detached: true,
    stdio: ['ignore', log, log],
    env: {
      ...process.env,
      PATH: `${ROOT}/.tools/bin:${ROOT}/node_modules/.bin:${process.env.PATH}`,
      UIP_SKIP_BUILD: '1',
      WRANGLER_SEND_METRICS: 'false',
      CLOUDFLARE_CF_FETCH_ENABLED: 'false',
    },
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + START_WAIT_MS;
  for (;;) {
    try {
      const r = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2000) });
      if (r.status === 200) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`wrangler dev did not come up; see ${state}.log`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    port,
    http: base,
    ws: `ws://127.0.0.1:${port}`,
    /** Stops wrangler and workerd; resolves once they exited. */
    stop() {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
      return exited;
    },
  };
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 token with these claims, valid for an hour unless `exp` is given. */
export function token(claims) {
  const body = { exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const unsigned = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(body)}`;
  const sig = createHmac('sha256', SECRET).update(unsigned).digest('base64url');
  return `${unsigned}.${sig}`;
}

/** Publishes one event; throws unless the gateway answers 200. */
export async function publish(gw, event) {
  const r = await fetch(`${gw.http}/v1/publish`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${token({ sub: 'producer', scope: 'publish' })}`,
    },
    body: JSON.stringify(event),
    signal: AbortSignal.timeout(10_000),
  });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`publish answered ${r.status}: ${JSON.stringify(body)}`);
  return body;
}

/** Debian's Chromium, headless, with nothing fetched from the network. */
export async function launchChromium() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Pages the tests fulfil themselves (page.route) have no address space;
      // let them reach the gateway on loopback.
      '--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights',
    ],
  });
}

/** A page that fails the test on any page error. */
export async function strictPage(browser, errors) {
  const page = await browser.newPage();
  page.on('pageerror', (e) => errors.push(e.message));
  return page;
}

export { ROOT };
