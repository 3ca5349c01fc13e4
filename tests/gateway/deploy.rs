//! A checked deploy: `wrangler deploy --dry-run` bundles the Worker as a real
//! deploy would, and the upload stays under 1 MiB gzipped (well inside every
//! plan's script size limit, and quick to cold-start).

use std::process::Command;

/// The largest gzip size of the upload accepted here (KiB).
const MAX_GZIP_KIB: f64 = 1024.0;

#[test]
fn the_worker_bundles_for_deploy_and_gzips_under_one_mebibyte() {
    let root = crate::common::root();
    let outdir = root
        .join("tests/.state")
        .join(format!("deploy-{}", std::process::id()));
    let out = Command::new(root.join("node_modules/.bin/wrangler"))
        .args(["deploy", "--dry-run", "--outdir"])
        .arg(&outdir)
        .current_dir(&root)
        .env("UIP_SKIP_BUILD", "1")
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .output()
        .expect("run wrangler deploy --dry-run");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("Total Upload:"))
        .unwrap_or_else(|| panic!("no upload size in: {text}"));
    println!("{line}");
    let gzip: f64 = line
        .split("gzip:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no gzip size in: {line}"));
    assert!(gzip < MAX_GZIP_KIB, "the bundle gzips to {gzip} KiB");
    assert!(
        std::fs::read_dir(&outdir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".wasm")),
        "the bundle holds the wasm module"
    );
}
