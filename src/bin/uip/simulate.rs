//! `uip simulate`: a realistic stream for the traffic platform's channels,
//! shaped like the `000_…` examples: cameras around Ho Chi Minh City with
//! flow, speeds and vehicle mixes, congestion zones, accidents that go new →
//! update → resolved, weather updates and alerts with end times, air quality,
//! camera status and alerts. The same `--seed` gives the same events.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use uip_realtime::core::time::rfc3339_ms;

use crate::publish::{self, Line, Summary};
use crate::{http, token, Failure, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Events per second, over all channels.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Seconds to run.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seed of the stream: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Camera sites around District 1 and nearby, Ho Chi Minh City.
const CAMERAS: [(&str, f64, f64); 12] = [
    ("CAM_001", 10.7769, 106.7009),
    ("CAM_002", 10.7756, 106.7019),
    ("CAM_003", 10.7731, 106.6983),
    ("CAM_004", 10.7800, 106.6990),
    ("CAM_005", 10.7872, 106.7053),
    ("CAM_006", 10.7626, 106.6822),
    ("CAM_007", 10.7952, 106.7218),
    ("CAM_008", 10.7575, 106.7012),
    ("CAM_009", 10.8016, 106.6645),
    ("CAM_010", 10.7690, 106.6669),
    ("CAM_011", 10.7823, 106.6958),
    ("CAM_012", 10.7715, 106.7043),
];

const ROADS: [&str; 10] = [
    "Nguyen Hue St",
    "Le Loi St",
    "Dong Khoi St",
    "Hai Ba Trung St",
    "Pasteur St",
    "Nam Ky Khoi Nghia St",
    "Vo Van Kiet Blvd",
    "Dien Bien Phu St",
    "Cach Mang Thang Tam St",
    "Tran Hung Dao St",
];

const ZONES: [&str; 6] = [
    "ZONE_001", "ZONE_002", "ZONE_003", "ZONE_004", "ZONE_005", "ZONE_006",
];

/// The seed channels with their share of the stream.
const CHANNELS: [(&str, u32); 8] = [
    ("traffic.flow", 40),
    ("congestion", 12),
    ("accidents", 12),
    ("alerts", 8),
    ("cameras.status", 10),
    ("air-quality", 8),
    ("weather", 8),
    ("traffic.patterns", 2),
];

/// Where an open accident is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    New,
    Updated,
}

/// A deterministic event source.
pub struct Simulator {
    rng: ChaCha8Rng,
    seed: u64,
    count: u64,
    accidents: u64,
    alerts: u64,
    open: Vec<(String, Stage)>,
    /// Unix ms the run starts at; weather alerts' times derive from it.
    start_ms: i64,
}

impl Simulator {
    pub fn new(seed: u64, start_ms: i64) -> Self {
        Simulator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            count: 0,
            accidents: 0,
            alerts: 0,
            open: Vec::new(),
            start_ms,
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        items.choose(&mut self.rng).expect("a non-empty list")
    }

    fn location(&mut self) -> Value {
        let (_, lat, lon) = *self.pick(&CAMERAS);
        json!({"lat": lat, "lon": lon})
    }

    fn round(x: f64, places: i32) -> f64 {
        let f = 10f64.powi(places);
        (x * f).round() / f
    }

    /// The next event: `{"channel","type","data","id"}`.
    pub fn next_event(&mut self) -> Value {
        self.count += 1;
        let total: u32 = CHANNELS.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.gen_range(0..total);
        let mut channel = CHANNELS[0].0;
        for (name, weight) in CHANNELS {
            if roll < weight {
                channel = name;
                break;
            }
            roll -= weight;
        }
        let (kind, data) = match channel {
            "traffic.flow" => ("traffic.flow", self.flow()),
            "congestion" => ("congestion.update", self.congestion()),
            "accidents" => self.accident(),
            "alerts" => ("alert", self.alert()),
            "cameras.status" => ("cameras.status", self.camera_status()),
            "air-quality" => ("air-quality.update", self.air_quality()),
            "traffic.patterns" => ("traffic.patterns", self.pattern()),
            _ if self.rng.gen_bool(0.2) => ("weather.alert", self.weather_alert()),
            _ => ("weather.update", self.weather()),
        };
        json!({"channel": channel, "type": kind, "data": data,
               "id": format!("sim-{}-{}", self.seed, self.count)})
    }

    fn flow(&mut self) -> Value {
        let (camera, lat, lon) = *self.pick(&CAMERAS);
        let intensity = self.rng.gen_range(5..=95);
        let level = match intensity {
            0..=30 => "low",
            31..=55 => "moderate",
            56..=80 => "high",
            _ => "severe",
        };
        let speed = Self::round(
            60.0 - f64::from(intensity) * 0.5 + self.rng.gen_range(-4.0..4.0),
            1,
        );
        json!({
            "camera_id": camera,
            "location": {"lat": lat, "lon": lon},
            "intensity": intensity,
            "average_speed": speed.max(3.0),
            "vehicle_types": {
                "car": self.rng.gen_range(5..40),
                "motorcycle": self.rng.gen_range(10..120),
                "truck": self.rng.gen_range(0..8),
                "bus": self.rng.gen_range(0..5),
            },
            "occupancy": Self::round(f64::from(intensity) / 100.0, 2),
            "congestion_level": level,
        })
    }

    fn congestion(&mut self) -> Value {
        let zone = *self.pick(&ZONES);
        let severity = Self::round(self.rng.gen_range(0.1..1.0), 2);
        let level = match severity {
            s if s < 0.3 => "low",
            s if s < 0.55 => "moderate",
            s if s < 0.8 => "high",
            _ => "severe",
        };
        let roads: Vec<&str> = ROADS.choose_multiple(&mut self.rng, 2).copied().collect();
        let detour = *self.pick(&ROADS);
        json!({
            "zone_id": zone,
            "level": level,
            "severity": severity,
            "affected_roads": roads,
            "estimated_delay": (severity * 30.0).round() as u32,
            "alternative_routes": [{"route": format!("via {detour}"), "delay": self.rng.gen_range(2..10)}],
        })
    }

    /// A new accident, or the next step of an open one.
    fn accident(&mut self) -> (&'static str, Value) {
        let progress = !self.open.is_empty() && (self.open.len() >= 4 || self.rng.gen_bool(0.6));
        if !progress {
            self.accidents += 1;
            let id = format!("ACC_{}_{:03}", self.seed, self.accidents);
            self.open.push((id.clone(), Stage::New));
            let (camera, lat, lon) = *self.pick(&CAMERAS);
            let severity = *self.pick(&["minor", "moderate", "severe", "critical"]);
            return (
                "accidents.new",
                json!({
                    "id": id,
                    "location": {"lat": lat, "lon": lon},
                    "severity": severity,
                    "confidence": Self::round(self.rng.gen_range(0.7..0.99), 2),
                    "camera_id": camera,
                    "vehicles_involved": self.rng.gen_range(1..5),
                }),
            );
        }
        let i = self.rng.gen_range(0..self.open.len());
        let (id, stage) = self.open[i].clone();
        match stage {
            Stage::New => {
                self.open[i].1 = Stage::Updated;
                let status = *self.pick(&["investigating", "responding", "clearing"]);
                let services = *self.pick(&["dispatched", "en_route", "on_scene"]);
                (
                    "accidents.update",
                    json!({"id": id, "status": status, "emergency_services": services}),
                )
            }
            Stage::Updated => {
                self.open.remove(i);
                let resolution = *self.pick(&["cleared", "towed"]);
                (
                    "accidents.resolved",
                    json!({"id": id, "resolution": resolution, "duration": self.rng.gen_range(15..120)}),
                )
            }
        }
    }

    fn alert(&mut self) -> Value {
        self.alerts += 1;
        let road = *self.pick(&ROADS);
        let (priority, category, title, message) = *self.pick(&[
            (
                "high",
                "accident",
                "Serious Accident on",
                "Multi-vehicle accident reported. Emergency services dispatched.",
            ),
            (
                "medium",
                "congestion",
                "Heavy Traffic on",
                "Expect delays; consider alternative routes.",
            ),
            (
                "low",
                "roadwork",
                "Roadwork on",
                "Lane closures for scheduled maintenance.",
            ),
        ]);
        json!({
            "id": format!("ALERT_{}_{:03}", self.seed, self.alerts),
            "priority": priority,
            "category": category,
            "title": format!("{title} {road}"),
            "message": message,
            "location": self.location(),
            "action_required": priority == "high",
        })
    }

    fn camera_status(&mut self) -> Value {
        let (camera, _, _) = *self.pick(&CAMERAS);
        let status = if self.rng.gen_bool(0.9) {
            "active"
        } else {
            "offline"
        };
        json!({
            "camera_id": camera,
            "status": status,
            "last_frame": rfc3339_ms(self.start_ms + self.count as i64 * 50),
            "health": {
                "connectivity": *self.pick(&["good", "fair", "poor"]),
                "image_quality": *self.pick(&["excellent", "good", "degraded"]),
                "fps": *self.pick(&[15, 25, 30]),
            },
        })
    }

    fn air_quality(&mut self) -> Value {
        let aqi: u32 = self.rng.gen_range(20..180);
        let category = match aqi {
            0..=50 => "Good",
            51..=100 => "Moderate",
            101..=150 => "Unhealthy for Sensitive Groups",
            _ => "Unhealthy",
        };
        json!({
            "location": self.location(),
            "aqi": aqi,
            "category": category,
            "dominant_pollutant": *self.pick(&["PM2.5", "PM10", "NO2"]),
            "pollutants": {
                "pm25": Self::round(f64::from(aqi) * 0.4, 1),
                "pm10": Self::round(f64::from(aqi) * 0.7, 1),
                "no2": Self::round(self.rng.gen_range(10.0..60.0), 1),
            },
        })
    }

    fn weather(&mut self) -> Value {
        json!({
            "location": self.location(),
            "temperature": Self::round(self.rng.gen_range(25.0..36.0), 1),
            "conditions": *self.pick(&["Sunny", "Partly Cloudy", "Cloudy", "Light Rain", "Thunderstorms"]),
            "precipitation": Self::round(self.rng.gen_range(0.0..12.0), 1),
        })
    }

    fn weather_alert(&mut self) -> Value {
        let (alert_type, description) = *self.pick(&[
            ("heavy_rain", "Heavy rainfall expected in next 2 hours"),
            ("flooding", "Street flooding likely in low-lying areas"),
            ("heat", "High temperatures expected this afternoon"),
        ]);
        let zones: Vec<&str> = ZONES.choose_multiple(&mut self.rng, 2).copied().collect();
        let start = self.start_ms + 60_000;
        json!({
            "alert_type": alert_type,
            "severity": *self.pick(&["advisory", "watch", "warning"]),
            "description": description,
            "affected_zones": zones,
            "start_time": rfc3339_ms(start),
            "end_time": rfc3339_ms(start + 2 * 3600 * 1000),
        })
    }

    fn pattern(&mut self) -> Value {
        json!({
            "zone_id": *self.pick(&ZONES),
            "pattern": *self.pick(&["morning_peak", "evening_peak", "off_peak"]),
            "average_speed": Self::round(self.rng.gen_range(12.0..45.0), 1),
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub async fn run(args: &Args) -> Result<(), Failure> {
    if args.rate == 0 {
        return Err(Failure::Usage("--rate must be at least 1".into()));
    }
    let base = http::base(&args.target.url)?;
    let token = token::or_minted(&args.target.token, "publish")?;
    let total = u64::from(args.rate) * args.duration;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} events, {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut sim = Simulator::new(args.seed, now_ms());
    let mut per_channel: BTreeMap<String, u64> = BTreeMap::new();
    let mut summary = Summary::default();
    let started = Instant::now();
    let tick = Duration::from_millis(100);
    let mut sent = 0u64;
    while sent < total {
        let due = ((started.elapsed().as_secs_f64() * f64::from(args.rate)) as u64 + 1).min(total);
        if due > sent {
            let lines: Vec<Line> = (sent..due)
                .map(|n| {
                    let event = sim.next_event();
                    *per_channel
                        .entry(event["channel"].as_str().unwrap_or("").to_owned())
                        .or_default() += 1;
                    Line {
                        number: n as usize + 1,
                        event: event.as_object().cloned().unwrap_or_else(Map::new),
                    }
                })
                .collect();
            publish::send_all(&base, &token, &lines, publish::MAX_BATCH, &mut summary).await?;
            bar.set_position(due);
            sent = due;
        }
        tokio::time::sleep(tick).await;
    }
    bar.finish_and_clear();
    let channels: Vec<String> = per_channel
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    eprintln!(
        "uip: simulated {} events in {:.1} s ({} requests, {} retries): {}",
        summary.events,
        started.elapsed().as_secs_f64(),
        summary.requests,
        summary.retries,
        channels.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let a: Vec<Value> = {
            let mut s = Simulator::new(7, 0);
            (0..200).map(|_| s.next_event()).collect()
        };
        let mut s = Simulator::new(7, 0);
        let b: Vec<Value> = (0..200).map(|_| s.next_event()).collect();
        assert_eq!(a, b);
        let mut other = Simulator::new(8, 0);
        let c: Vec<Value> = (0..200).map(|_| other.next_event()).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn every_seed_channel_appears_and_accidents_follow_their_life() {
        let mut s = Simulator::new(3, 0);
        let events: Vec<Value> = (0..2000).map(|_| s.next_event()).collect();
        for (channel, _) in CHANNELS {
            assert!(events.iter().any(|e| e["channel"] == channel), "{channel}");
        }
        let mut stage: BTreeMap<String, &str> = BTreeMap::new();
        for e in events.iter().filter(|e| e["channel"] == "accidents") {
            let id = e["data"]["id"].as_str().unwrap().to_owned();
            let kind = e["type"].as_str().unwrap();
            let before = stage.get(&id).copied();
            let ok = matches!(
                (before, kind),
                (None, "accidents.new")
                    | (Some("accidents.new"), "accidents.update")
                    | (Some("accidents.update"), "accidents.resolved")
            );
            assert!(ok, "{id}: {before:?} then {kind}");
            stage.insert(id, kind);
        }
        assert!(stage.values().any(|k| *k == "accidents.resolved"));
    }

    #[test]
    fn every_event_is_valid_for_its_channel() {
        let config = uip_realtime::core::config::Config::default();
        let mut s = Simulator::new(5, 0);
        for _ in 0..1000 {
            let e = s.next_event();
            let body = e.to_string();
            let parsed = uip_realtime::core::protocol::parse_publish(&body, &config);
            assert!(parsed.is_ok(), "{body}: {:?}", parsed.err());
        }
    }
}
