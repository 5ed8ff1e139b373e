//! The Cloudinary Admin API emulator of the tests as a server of its own, for benchmarks that
//! need many assets, a realistic latency or a tight rate limit:
//!
//! ```text
//! cargo build --release --example cloudinary_emulator
//! target/release/examples/cloudinary_emulator --seed 100000 --latency-ms 120
//! ```
//!
//! The first line on stdout is `listening on http://127.0.0.1:PORT`; give a client
//! `cloudinary://KEY:SECRET@CLOUD?upload_prefix=http://127.0.0.1:PORT`. It runs until killed.

// A server has no use for the test controls (failure injection, call counts).
#[allow(dead_code)]
#[path = "../tests/common/cloudinary.rs"]
mod cloudinary;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;

use cloudinary::{Emulator, Options, Resource};

/// Serves the Cloudinary Admin API emulator until killed.
#[derive(Debug, Parser)]
struct Args {
    /// Port on 127.0.0.1; 0 takes any free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value = "demo-cloud")]
    cloud: String,
    #[arg(long, default_value = "123456789012345")]
    key: String,
    #[arg(long, default_value = "emulator-secret")]
    secret: String,
    /// Delay before answering each request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Creates this many assets: 80 % images, 20 % videos, over the last 90 days.
    #[arg(long, default_value_t = 0)]
    seed: usize,
    /// Loads assets from JSON lines:
    /// {"public_id","resource_type","created_at","bytes","format"}.
    #[arg(long)]
    seed_file: Option<PathBuf>,
    /// Admin API calls allowed an hour.
    #[arg(long, default_value_t = 5000)]
    rate_limit: u64,
    /// Leaves the X-FeatureRateLimit-* headers out of responses.
    #[arg(long)]
    no_rate_limit_headers: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut assets = seeded(args.seed, Utc::now());
    if let Some(path) = &args.seed_file {
        match from_file(path) {
            Ok(more) => assets.extend(more),
            Err(e) => {
                eprintln!("cloudinary_emulator: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let emulator = Emulator::start_on(
        args.port,
        Options {
            cloud: args.cloud,
            api_key: args.key,
            api_secret: args.secret,
            latency: Duration::from_millis(args.latency_ms),
            rate_limit: args.rate_limit,
            rate_limit_headers: !args.no_rate_limit_headers,
            ..Options::default()
        },
    );
    let count = assets.len();
    emulator.add_many(assets);

    let mut out = std::io::stdout().lock();
    // Whoever started the server waits for this line; it must arrive whole and first.
    if writeln!(out, "listening on {}", emulator.base_url())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(out);
    eprintln!(
        "cloudinary_emulator: {count} assets; CLOUDINARY_URL={}",
        emulator.cloudinary_url()
    );
    loop {
        std::thread::park();
    }
}

/// `n` assets, the same for the same `n` and `now`: every fifth a video, folders `f00`–`f99`,
/// created evenly over the 90 days before `now`, a few KB each.
fn seeded(n: usize, now: DateTime<Utc>) -> Vec<Resource> {
    let span = TimeDelta::days(90).num_seconds();
    let n_i64 = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
    (0..n)
        .map(|i| {
            let step = i64::try_from(i).unwrap_or(i64::MAX);
            let created_at = now - TimeDelta::seconds(span * step / n_i64);
            let folder = i % 100;
            let bytes = 2_048 + (i as u64 * 7_919) % 6_144;
            let mut r = if i % 5 == 4 {
                Resource::video(&format!("bench/f{folder:02}/vid-{i:06}"), created_at)
            } else {
                Resource::image(&format!("bench/f{folder:02}/img-{i:06}"), created_at)
            };
            r.bytes = bytes;
            r
        })
        .collect()
}

/// One asset a line; `public_id` is required, the rest defaults to an image uploaded now.
fn from_file(path: &Path) -> Result<Vec<Resource>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut assets = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |msg: String| format!("line {}: {msg}", n + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
        let field = |name: &str| v.get(name).and_then(serde_json::Value::as_str);
        let public_id = field("public_id").ok_or_else(|| at("no public_id".to_owned()))?;
        let created_at = match field("created_at") {
            Some(s) => DateTime::parse_from_rfc3339(s)
                .map_err(|e| at(format!("created_at {s:?}: {e}")))?
                .with_timezone(&Utc),
            None => Utc::now(),
        };
        let mut r = match field("resource_type").unwrap_or("image") {
            "image" => Resource::image(public_id, created_at),
            "video" => Resource::video(public_id, created_at),
            "raw" => Resource::raw(public_id, created_at),
            other => return Err(at(format!("resource_type {other:?}"))),
        };
        if let Some(bytes) = v.get("bytes").and_then(serde_json::Value::as_u64) {
            r.bytes = bytes;
        }
        if let Some(format) = field("format") {
            r.format = format.to_owned();
        }
        if let Some(delivery_type) = field("type") {
            r.delivery_type = delivery_type.to_owned();
        }
        assets.push(r);
    }
    Ok(assets)
}
