// A plain JavaScript Durable Object that closes hibernatable sockets the ways
// the gateway does, to show when workerd ends the connection (see run.sh).
export class Room {
  constructor(state) {
    this.state = state;
  }

  async fetch(req) {
    const mode = new URL(req.url).searchParams.get('mode');
    const pair = new WebSocketPair();
    this.state.acceptWebSocket(pair[1], [mode]);
    if (mode === 'fetch') pair[1].close(4003, 'closed in fetch');
    if (mode === 'busy') await this.state.storage.put('ticks', 5);
    if (mode === 'alarm' || mode === 'busy') await this.state.storage.setAlarm(Date.now() + 500);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  async alarm() {
    for (const ws of this.state.getWebSockets()) ws.close(4000, 'closed by the alarm');
    // Keeps the object busy for 5 more seconds: the connection then ends 10 s
    // after the last tick, so what ends it is the idle object's eviction.
    const ticks = (await this.state.storage.get('ticks')) ?? 0;
    if (ticks > 0) {
      await this.state.storage.put('ticks', ticks - 1);
      await this.state.storage.setAlarm(Date.now() + 1000);
    }
  }

  async webSocketMessage(ws) {
    if (this.state.getTags(ws)[0] === 'message') ws.close(4004, 'closed in a message handler');
  }

  async webSocketClose(ws, code) {
    try {
      ws.close(code === 1005 ? 1000 : code, 'closed');
    } catch {
      // Already closed by us.
    }
  }
}

export default {
  async fetch(req, env) {
    const room = new URL(req.url).searchParams.get('room');
    return env.ROOM.get(env.ROOM.idFromName(room)).fetch(req);
  },
};
