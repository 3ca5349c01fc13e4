// Baseline: a plain JavaScript Durable Object doing the same fan-out with the
// hibernation API (one object per channel, getWebSockets() and send per socket),
// run under the same `wrangler dev`. No auth, history or snapshot.
import { DurableObject } from 'cloudflare:workers';

export class Channel extends DurableObject {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/ws') {
      const pair = new WebSocketPair();
      this.ctx.acceptWebSocket(pair[1]);
      pair[1].send(JSON.stringify({ type: 'subscribed', timestamp: new Date().toISOString(), data: { channel: url.searchParams.get('channel') } }));
      return new Response(null, { status: 101, webSocket: pair[0] });
    }
    const events = await request.json();
    let seq = (await this.ctx.storage.get('seq')) || 0;
    const results = [];
    for (const e of events) {
      seq += 1;
      const message = JSON.stringify({ type: e.type, channel: e.channel, seq, timestamp: new Date().toISOString(), data: e.data });
      for (const ws of this.ctx.getWebSockets()) {
        try { ws.send(message); } catch {}
      }
      results.push({ channel: e.channel, seq });
    }
    await this.ctx.storage.put('seq', seq);
    return Response.json(results);
  }

  webSocketMessage(ws, message) {}
  webSocketClose(ws, code) { ws.close(1000, 'bye'); }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const m = url.pathname.match(/^\/ws\/(.+)$/);
    if (m) {
      const channel = decodeURIComponent(m[1]);
      return env.CHANNEL.get(env.CHANNEL.idFromName(channel)).fetch(`https://do/ws?channel=${encodeURIComponent(channel)}`, request);
    }
    if (url.pathname === '/v1/publish' && request.method === 'POST') {
      const body = await request.json();
      const events = body.events || [body];
      const channel = events[0].channel;
      const stub = env.CHANNEL.get(env.CHANNEL.idFromName(channel));
      const resp = await stub.fetch('https://do/publish', { method: 'POST', body: JSON.stringify(events) });
      return Response.json({ results: await resp.json() });
    }
    return new Response('not found', { status: 404 });
  },
};
