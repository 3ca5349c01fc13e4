// Baseline: a hand-written Node `ws` server as ../shared/seeds/001_… describes it
// (a Map of clients with their topics, broadcastToTopic), speaking just enough of
// uip-realtime's protocol for the same load generator: `/ws` + subscribe, or
// `/ws/{channel}`; `POST /v1/publish` with one event or {"events": [...]}.
// No auth, no storage, no history: it is the speed of light for one process.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.env.PORT || 8788);
const clients = new Map(); // ws -> { topics: Set }
const seqs = new Map();

function broadcastToTopic(topic, message) {
  for (const [ws, client] of clients) {
    if (client.topics.has(topic) && ws.readyState === 1) ws.send(message);
  }
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/v1/publish') {
    res.writeHead(404).end();
    return;
  }
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    let parsed;
    try { parsed = JSON.parse(body); } catch { res.writeHead(400).end(); return; }
    const events = parsed.events || [parsed];
    const results = events.map((e) => {
      const seq = (seqs.get(e.channel) || 0) + 1;
      seqs.set(e.channel, seq);
      const message = JSON.stringify({ type: e.type, channel: e.channel, seq, timestamp: new Date().toISOString(), data: e.data });
      broadcastToTopic(e.channel, message);
      return { channel: e.channel, seq };
    });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ results }));
  });
});

const wss = new WebSocketServer({ server, maxPayload: 1 << 20 });
wss.on('connection', (ws, req) => {
  const client = { topics: new Set() };
  clients.set(ws, client);
  const path = new URL(req.url, 'http://x').pathname;
  const subscribed = (channel) => JSON.stringify({ type: 'subscribed', timestamp: new Date().toISOString(), data: { channel } });
  if (path.startsWith('/ws/')) {
    const channel = decodeURIComponent(path.slice(4));
    client.topics.add(channel);
    ws.send(subscribed(channel));
  }
  ws.on('message', (raw) => {
    let m;
    try { m = JSON.parse(raw.toString()); } catch { return; }
    if (m.type === 'subscribe' && typeof m.channel === 'string') {
      client.topics.add(m.channel);
      ws.send(subscribed(m.channel));
    } else if (m.type === 'ping') {
      ws.send('{"type":"pong"}');
    }
  });
  ws.on('close', () => clients.delete(ws));
  ws.on('error', () => clients.delete(ws));
});

server.listen(port, '127.0.0.1', () => console.log(`node ws baseline on ${port}`));
