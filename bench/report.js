// Renders a bench/results/*.jsonl file as the markdown tables of BENCHMARKS.md:
// every run, then the targets of issue 11 judged on the bare-runtime rows.
'use strict';
const fs = require('fs');
const rows = fs.readFileSync(process.argv[2], 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
const f = (x, d = 0) => (x === undefined ? '' : Number(x).toFixed(d));
console.log('| round | server | via | route | N | offered | pub batch | client batch | connect s | deliveries/s | events / frame | p50 ms | p90 ms | p99 ms | max ms | lost | dup | server CPU % | RSS MiB / 1000 conns | loadgen CPU % |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const { server, via, route, rate, publish_batch, client_batch, round, report: r } of rows) {
  console.log(`| ${round || 1} | ${server} | ${via} | ${route} | ${r.connected}/${r.sockets} | ${rate ? rate + '/s' : 'max'} | ${publish_batch} | ${client_batch ? 'yes' : 'no'} | ${f(r.connect_s, 1)} | ${f(r.deliveries_per_s)} | ${f(r.events_per_frame, 1)} | ${f(r.p50_ms, 1)} | ${f(r.p90_ms, 1)} | ${f(r.p99_ms, 1)} | ${f(r.max_ms, 1)} | ${r.lost} | ${r.duplicated} | ${f(r.server_cpu_pct)} | ${f(r.server_rss_mib_per_1000)} | ${f(r.loadgen_cpu_pct)} |`);
}

// The bare-runtime report of one run, one-event publishes.
const bare = (round, server, route, n, rate, clientBatch = 0) =>
  rows.find((r) => (r.round || 1) === round && r.via === 'bare' && r.server === server && r.route === route &&
    r.report.sockets === n && r.rate === rate && r.publish_batch === 1 && r.client_batch === clientBatch)?.report;
const rounds = [...new Set(rows.map((r) => r.round || 1))].sort((a, b) => a - b);
const median = (xs) => {
  const s = xs.filter((x) => x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return undefined;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const tput = (r) => r?.deliveries_per_s;
const ratio = (a, b) => (a === undefined || !b ? undefined : a / b);
// A target: its name, the value of each round, how to show it, and whether a value meets it.
const targets = [];
const target = (name, value, show, meets) => targets.push({ name, values: rounds.map(value), show, meets });
// Ratios are judged at two decimals: at an offered rate every server delivers
// that rate, within a few deliveries.
const atLeast = (min) => (x) => Number(x.toFixed(2)) >= min;
const atMost = (max) => (x) => Number(x.toFixed(2)) <= max;
const times = (x) => `${x.toFixed(2)}×`;
const ms = (x) => `${x.toFixed(1)} ms`;
for (const n of [100, 1000]) {
  for (const rate of [20, 100, 0]) {
    const offered = rate ? `${rate}/s` : 'flat out';
    target(`hub / JS object, N = ${n}, ${offered} (≥ 1.0)`,
      (k) => ratio(tput(bare(k, 'gateway', 'multiplexed', n, rate)), tput(bare(k, 'js-do', 'direct', n, rate))), times, atLeast(1.0));
    target(`hub / room, N = ${n}, ${offered} (≥ 0.9)`,
      (k) => ratio(tput(bare(k, 'gateway', 'multiplexed', n, rate)), tput(bare(k, 'gateway', 'direct', n, rate))), times, atLeast(0.9));
  }
}
target('hub p50, N = 1000, 20/s (≤ 30 ms)', (k) => bare(k, 'gateway', 'multiplexed', 1000, 20)?.p50_ms, ms, (x) => x <= 30);
target('hub p99, N = 1000, 20/s (≤ 100 ms)', (k) => bare(k, 'gateway', 'multiplexed', 1000, 20)?.p99_ms, ms, (x) => x <= 100);
target('hub / room server CPU, N = 100, 20/s (≤ 1.2)',
  (k) => ratio(bare(k, 'gateway', 'multiplexed', 100, 20)?.server_cpu_pct, bare(k, 'gateway', 'direct', 100, 20)?.server_cpu_pct), times, atMost(1.2));
for (const route of ['multiplexed', 'direct']) {
  target(`\`?batch=1\` ${route === 'multiplexed' ? 'hub' : 'room'} / JS object, N = 1000, flat out (≥ 4)`,
    (k) => ratio(tput(bare(k, 'gateway', route, 1000, 0, 1)), tput(bare(k, 'js-do', 'direct', 1000, 0))), times, atLeast(4));
}
target('10,000 sockets subscribed through hubs (≤ 30 s)',
  (k) => bare(k, 'gateway', 'multiplexed', 10000, 100)?.connect_s, (x) => `${x.toFixed(1)} s`, (x) => x <= 30);

const lost = rows.reduce((s, r) => s + (r.report.lost || 0), 0);
const dup = rows.reduce((s, r) => s + (r.report.duplicated || 0), 0);
console.log('');
console.log(`Against the targets (bare runtime, one-event publishes; judged on the median of the rounds). Lost ${lost}, duplicated ${dup} over ${rows.length} runs: ${lost === 0 && dup === 0 ? 'met' : 'NOT met'}.`);
console.log('');
console.log(`| target | ${rounds.map((k) => `round ${k}`).join(' | ')} | median | |`);
console.log(`|---|${rounds.map(() => '---|').join('')}---|---|`);
for (const { name, values, show, meets } of targets) {
  const m = median(values);
  const cells = values.map((v) => (v === undefined ? '–' : show(v)));
  console.log(`| ${name} | ${cells.join(' | ')} | ${m === undefined ? '–' : show(m)} | ${m === undefined ? '' : meets(m) ? 'met' : '**not met**'} |`);
}
