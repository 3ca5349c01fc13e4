//! `uip stats`: `/v1/stats` as a table.

use serde_json::Value;

use crate::http;
use crate::{token, Failure, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
}

/// The table for a `/v1/stats` body.
pub fn table(stats: &Value) -> String {
    let mut rows: Vec<(String, String, String, String)> = stats["channels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, c)| {
                    (
                        name.clone(),
                        c["subscribers"].to_string(),
                        c["seq"].to_string(),
                        c["delivered"].as_u64().unwrap_or(0).to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort();
    let width = rows.iter().map(|r| r.0.len()).chain([7]).max().unwrap_or(7);
    let mut out = format!(
        "connections {}  hubs {}\n{:<width$}  {:>11}  {:>8}  {:>10}\n",
        stats["connections"], stats["hubs"], "channel", "subscribers", "seq", "delivered"
    );
    for (name, subs, seq, delivered) in rows {
        out.push_str(&format!(
            "{name:<width$}  {subs:>11}  {seq:>8}  {delivered:>10}\n"
        ));
    }
    out
}

pub async fn run(args: &Args) -> Result<(), Failure> {
    let base = http::base(&args.target.url)?;
    let token = token::or_minted(&args.target.token, "subscribe")?;
    let stats = http::get(&base, "/v1/stats", &token).await?;
    print!("{}", table(&stats));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_lists_channels_by_name() {
        let t = table(&json!({"connections": 3, "hubs": 4, "channels": {
            "weather": {"subscribers": 1, "seq": 9, "delivered": 9},
            "accidents": {"subscribers": 2, "seq": 40, "delivered": 80}}}));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "connections 3  hubs 4");
        assert!(lines[1].starts_with("channel"));
        assert!(lines[2].starts_with("accidents") && lines[2].ends_with("40          80"));
        assert!(lines[3].starts_with("weather"));
    }
}
