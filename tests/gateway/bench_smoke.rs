//! A small run of the load generator, so the benchmark cannot rot.

use std::time::Duration;

use uip_bench::{run, Route, RunConfig};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_delivers_every_event_to_a_hundred_sockets() {
    let gw = gateway();
    for (route, client_batch) in [(Route::Multiplexed, false), (Route::Direct, true)] {
        let report = run(RunConfig {
            base: gw.http(),
            route,
            channel: format!("conversation:{}", unique("smoke")),
            sockets: 100,
            events: 100,
            rate: 0,
            publish_batch: if client_batch { 10 } else { 1 },
            client_batch,
            token: sub_token(),
            publish_token: pub_token(),
            server_pids: Vec::new(),
            phase_timeout: Duration::from_secs(60),
        })
        .await
        .expect("bench run");
        assert_eq!(report.connected, 100, "{report:?}");
        assert_eq!(report.acknowledged, 100, "{report:?}");
        assert_eq!((report.lost, report.duplicated), (0, 0), "{report:?}");
        assert_eq!(report.deliveries, 100 * 100, "{report:?}");
    }
}
