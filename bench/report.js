// Renders a bench/results/*.jsonl file as the markdown table of BENCHMARKS.md.
'use strict';
const fs = require('fs');
const rows = fs.readFileSync(process.argv[2], 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
const f = (x, d = 0) => (x === undefined ? '' : Number(x).toFixed(d));
console.log('| server | via | route | N | offered | pub batch | client batch | connect s | deliveries/s | events / frame | p50 ms | p90 ms | p99 ms | max ms | lost | dup | server CPU % | RSS MiB / 1000 conns | loadgen CPU % |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const { server, via, route, rate, publish_batch, client_batch, report: r } of rows) {
  console.log(`| ${server} | ${via} | ${route} | ${r.connected}/${r.sockets} | ${rate ? rate + '/s' : 'max'} | ${publish_batch} | ${client_batch ? 'yes' : 'no'} | ${f(r.connect_s, 1)} | ${f(r.deliveries_per_s)} | ${f(r.events_per_frame, 1)} | ${f(r.p50_ms, 1)} | ${f(r.p90_ms, 1)} | ${f(r.p99_ms, 1)} | ${f(r.max_ms, 1)} | ${r.lost} | ${r.duplicated} | ${f(r.server_cpu_pct)} | ${f(r.server_rss_mib_per_1000)} | ${f(r.loadgen_cpu_pct)} |`);
}
