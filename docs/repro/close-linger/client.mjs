// Connects, optionally sends one frame, and prints when the close frame came
// and when the connection ended. Usage: node client.mjs PORT MODE [send]
import WebSocket from 'ws';

const [port, mode, send] = process.argv.slice(2);
const started = Date.now();
const ws = new WebSocket(`ws://127.0.0.1:${port}/?mode=${mode}&room=${mode}-${Math.random()}`);
let frameAt = null;
ws.on('open', () => {
  // ws has no public event for the close frame itself; its receiver has.
  ws._receiver.on('conclude', () => {
    frameAt = Date.now() - started;
  });
  if (send) ws.send('hello');
});
ws.on('close', (code) => {
  const ended = Date.now() - started;
  console.log(`${mode}${send ? ' after a client frame' : ''}: close ${code}, frame at ${frameAt} ms, ended at ${ended} ms (${ended - frameAt} ms later)`);
  process.exit(0);
});
setTimeout(() => {
  console.log(`${mode}: not over within 20 s`);
  process.exit(1);
}, 20000);
