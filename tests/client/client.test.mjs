// The TypeScript client (clients/ts, built to dist/) under Node's test
// runner, against real `wrangler dev`, with `ws` as its WebSocket.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import WebSocket, { WebSocketServer } from 'ws';

import { UipClient, backoffDelay, DEFAULT_BACKOFF, apply, fromSnapshot } from '../../clients/ts/dist/index.js';
import { publish, startGateway, token } from '../browser/gateway.mjs';

const WAIT_MS = 15_000;

let gw;
before(async () => {
  gw = await startGateway('client', { JWT_LEEWAY_S: '1', AUTH_TIMEOUT_S: '5' });
});
after(async () => {
  await gw?.stop();
});

const unique = (p) => `${p}${process.pid}-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
const subToken = (claims = {}) => token({ sub: 'ts-client', scope: 'subscribe publish', channels: ['*'], ...claims });

/** Resolves when `check()` is true, polling each event loop turn; bounded. */
async function until(what, check, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Publishes `n` chat events with ids, retrying each until acknowledged (the gateway may be down). */
async function publishAll(target, channel, from, to) {
  for (let n = from; n < to; n++) {
    const deadline = Date.now() + 120_000;
    for (;;) {
      try {
        const body = await publish(target(), { channel, type: 'chat_message', data: { n }, id: `m-${n}` });
        if (body.results?.[0]?.seq) break;
      } catch {
        // down or restarting: retry with the same id
      }
      if (Date.now() > deadline) throw new Error(`event ${n} never acknowledged`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

test('backoff delays stay within full-jitter bounds and the cap', () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const cap = Math.min(DEFAULT_BACKOFF.maxMs, DEFAULT_BACKOFF.initialMs * 2 ** attempt);
    assert.equal(backoffDelay(attempt, DEFAULT_BACKOFF, () => 0), 0);
    const top = backoffDelay(attempt, DEFAULT_BACKOFF, () => 0.999999);
    assert.ok(top <= cap && top >= cap * 0.99, `attempt ${attempt}: ${top} vs cap ${cap}`);
  }
  assert.equal(backoffDelay(50, DEFAULT_BACKOFF, () => 0.999999), DEFAULT_BACKOFF.maxMs - 1);
});

test('the live state keeps the latest per key and drops resolved accidents', () => {
  const ev = (seq, type, data) => ({ type, channel: 'accidents', seq, timestamp: 't', data });
  let s = fromSnapshot([ev(1, 'accidents.new', { id: 'A', severity: 'minor' })]);
  s = apply(s, ev(2, 'accidents.update', { id: 'A', status: 'investigating' }));
  assert.deepEqual(s.get('A').data, { id: 'A', severity: 'minor', status: 'investigating' });
  s = apply(s, ev(3, 'accidents.new', { id: 'B' }));
  s = apply(s, ev(4, 'accidents.resolved', { id: 'A' }));
  assert.deepEqual([...s.keys()], ['B']);
});

test('a restart of the gateway mid-stream loses and repeats nothing the application sees', async () => {
  const channel = unique('conversation:ts-restart-');
  const seen = [];
  const states = [];
  const client = new UipClient({
    url: gw.ws,
    token: () => subToken(),
    WebSocket,
    backoff: { initialMs: 200, maxMs: 1000 },
  });
  client.on('state', (s) => states.push(s));
  let snapshots = 0;
  client.subscribe(channel, { onEvent: (e) => seen.push(e.seq), onSnapshot: () => (snapshots += 1) });
  client.connect();
  try {
    // Publishing starts once the subscription stands: an event published
    // before it is (rightly) not part of a namespaced channel's first state.
    await until('subscribed', () => snapshots > 0);
    let target = gw;
    const publisher = publishAll(() => target, channel, 0, 60);
    await until('20 events', () => seen.length >= 20);
    await gw.stop();
    gw = await startGateway('client', { JWT_LEEWAY_S: '1', AUTH_TIMEOUT_S: '5' }, { again: gw });
    target = gw;
    await publisher;
    await until('all 60 events', () => seen.length >= 60, 60_000).catch((e) => {
      throw new Error(`${e.message}; saw ${seen.join(',')}; states ${states.join(',')}`);
    });
  } finally {
    client.close();
  }
  assert.deepEqual(seen, Array.from({ length: 60 }, (_, i) => i + 1));
  assert.ok(states.includes('reconnecting'), `the client reconnected: ${states}`);
});

test('an expiring token is refreshed from the provider and the connection survives', async () => {
  const channel = unique('conversation:ts-refresh-');
  let calls = 0;
  const provider = () => {
    calls += 1;
    return subToken({ exp: Math.floor(Date.now() / 1000) + 4 });
  };
  const states = [];
  const seen = [];
  const client = new UipClient({ url: gw.ws, token: provider, WebSocket, refreshBeforeMs: 2000 });
  client.on('state', (s) => states.push(s));
  client.subscribe(channel, { onEvent: (e) => seen.push(e.data.n) });
  client.connect();
  await until('open', () => client.state === 'open');
  // Past the first token's exp + leeway: only refreshes keep the socket.
  await until('two refreshes', () => calls >= 3, 12_000);
  await publish(gw, { channel, type: 'chat_message', data: { n: 1 } });
  await until('the event', () => seen.length === 1);
  client.close();
  assert.deepEqual(states, ['connecting', 'open', 'closed'], 'never reconnected');
});

test('a malformed server frame is reported and does not stop the client', async () => {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  server.on('connection', (sock) => {
    sock.send(JSON.stringify({ type: 'auth.success', timestamp: 't', data: { sub: 'x', exp: null, connection_id: 'c' } }));
    sock.on('message', (raw) => {
      const m = JSON.parse(String(raw));
      if (m.type !== 'subscribe') return;
      sock.send(JSON.stringify({ type: 'subscribed', timestamp: 't', data: { channel: m.channel, filters: {}, seq: 0 } }));
      sock.send(JSON.stringify({ type: 'snapshot', timestamp: 't', data: { channel: m.channel, seq: 0, events: [] } }));
      sock.send('{not json');
      sock.send('[1,2,3]');
      sock.send(JSON.stringify({ type: 'x', channel: m.channel, seq: 1, timestamp: 't', data: { ok: true } }));
    });
  });
  await new Promise((r) => server.once('listening', r));
  const errors = [];
  const seen = [];
  const client = new UipClient({ url: `ws://127.0.0.1:${server.address().port}`, token: 't', WebSocket });
  client.on('error', (e) => errors.push(e.code));
  client.subscribe('c', { onEvent: (e) => seen.push(e.data) });
  client.connect();
  await until('the event after the bad frames', () => seen.length === 1);
  client.close();
  server.close();
  assert.deepEqual(errors, ['INVALID_FRAME', 'INVALID_FRAME']);
});

test('a refused channel is a typed error for that subscription while the others keep working', async () => {
  const allowed = unique('conversation:ts-ok-');
  const client = new UipClient({
    url: gw.ws,
    token: subToken({ channels: [allowed], scope: 'subscribe' }),
    WebSocket,
  });
  const refused = [];
  const seen = [];
  client.subscribe('conversation:elsewhere', { onError: (e) => refused.push(e.code) });
  client.subscribe('nowhere', { onError: (e) => refused.push(e.code) });
  client.subscribe(allowed, { onEvent: (e) => seen.push(e.seq) });
  client.connect();
  await until('both refusals', () => refused.length === 2);
  await publish(gw, { channel: allowed, type: 'chat_message', data: {} });
  await until('the allowed channel', () => seen.length === 1);
  client.close();
  assert.deepEqual(refused.sort(), ['CHANNEL_NOT_FOUND', 'FORBIDDEN']);
});

test('a token without scope subscribe is final: no reconnect', async () => {
  const errors = [];
  const states = [];
  const client = new UipClient({ url: gw.ws, token: () => token({ sub: 'p', scope: 'publish' }), WebSocket });
  client.on('error', (e) => errors.push(e.code));
  client.on('state', (s) => states.push(s));
  client.connect();
  await until('closed', () => client.state === 'closed');
  assert.ok(errors.includes('FORBIDDEN'), `${errors}`);
  assert.ok(!states.includes('reconnecting'), `${states}`);
});

test('client publish resolves with published and a failed command rejects with its code', async () => {
  const channel = unique('conversation:ts-publish-');
  const client = new UipClient({ url: gw.ws, token: subToken(), WebSocket });
  const seen = [];
  client.subscribe(channel, { onEvent: (e) => seen.push(e.data.text) });
  client.connect();
  await until('open', () => client.state === 'open');
  const published = await client.publish(channel, 'chat_message', { text: 'hi' }, 'p1');
  assert.equal(published.seq, 1);
  await until('the echo', () => seen.length === 1);
  await assert.rejects(client.command('stream_control', { action: 'start' }), (e) => e.code === 'COMMAND_FAILED');
  client.close();
});

test('a connection whose pings go unanswered is declared dead and replaced', async () => {
  let connections = 0;
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  server.on('connection', (sock) => {
    connections += 1;
    // Authenticates, then never answers anything: a half-dead connection.
    sock.send(JSON.stringify({ type: 'auth.success', timestamp: 't', data: { sub: 'x', exp: null, connection_id: `c${connections}` } }));
  });
  await new Promise((r) => server.once('listening', r));
  const errors = [];
  const client = new UipClient({
    url: `ws://127.0.0.1:${server.address().port}`,
    token: () => 't',
    WebSocket,
    pingIntervalMs: 200,
    pongTimeoutMs: 300,
    backoff: { initialMs: 50, maxMs: 100 },
  });
  client.on('error', (e) => errors.push(e.code));
  const started = Date.now();
  client.connect();
  await until('a second connection', () => connections >= 2, 5_000);
  const took = Date.now() - started;
  client.close();
  server.close();
  assert.ok(errors.includes('CONNECTION_LOST'), `${errors}`);
  assert.ok(took < 200 + 300 + 100 + 1000, `replaced after ${took} ms`);
});

test('a rate limit is a typed error, then a backoff and a reconnect that keeps the subscriptions', async () => {
  const channel = unique('conversation:ts-limit-');
  const errors = [];
  const states = [];
  const seen = [];
  const client = new UipClient({ url: gw.ws, token: () => subToken(), WebSocket, backoff: { initialMs: 200, maxMs: 500 } });
  client.on('error', (e) => errors.push(e.code));
  client.on('state', (s) => states.push(s));
  client.subscribe(channel, { onEvent: (e) => seen.push(e.seq) });
  client.connect();
  await until('open', () => client.state === 'open');
  // Over the burst limit (50 frames in 5 s): the server closes with 4008.
  for (let i = 0; i < 60; i++) client.publish(channel, 'chat_message', { i }).catch(() => {});
  await until('the rate limit', () => errors.includes('RATE_LIMIT_EXCEEDED'));
  await until('reconnected', () => states.lastIndexOf('open') > states.indexOf('reconnecting') && states.includes('reconnecting'));
  const before = seen.length;
  await publish(gw, { channel, type: 'chat_message', data: { after: true } });
  await until('an event after the reconnect', () => seen.length > before);
  client.close();
  assert.deepEqual(seen, Array.from({ length: seen.length }, (_, i) => i + 1), 'in order, once each');
});
