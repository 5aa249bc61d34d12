//! `slotcast-bench`: slotcast's benchmarks. Each prints figures and asserts none
//! (BENCHMARKS.md has the latest ones and the machine they ran on).
//!
//! Contract: a benchmark sees slotcast only as its users and operators do: the built
//! `slotcast` binary run as child processes (`server api|scheduler|streamer`, `admin token
//! create`), their HTTP (REST API, `/readyz`, `/metrics`, HLS), RTSP, and NATS as
//! `docs/nats-contract.md` defines it; Postgres only to create and drop a throwaway database,
//! for the raw-SQL baseline, and to seed an event store in the layout slotcast writes
//! (`docs/events.md`) for the rebuild. It links no slotcast crate but `slotcast-domain`, for
//! the contract's message types and, to seed that store, the aggregate's decisions. Exit codes: 0 figures printed, 1 failure, 2 usage.

mod booking;
mod client;
mod glass;
mod hls;
mod hls_load;
mod ingest;
mod load;
mod nats;
mod rebuild;
mod report;
mod scratch;
mod seed;
mod slotcast;
mod slots;
mod write_path;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::slotcast::Slotcast;

#[derive(Parser)]
#[command(
    name = "slotcast-bench",
    version,
    about = "slotcast's benchmarks: they run the built slotcast binary and print figures.",
    long_about = "slotcast's benchmarks: they run the built slotcast binary as child processes, \
        talk to it over HTTP, RTSP and NATS as its users do, and print figures (they assert \
        none). Build both first: cargo build --release -p slotcast -p slotcast-bench"
)]
struct Cli {
    /// The slotcast binary to run (default: `slotcast` beside this executable).
    #[arg(long, global = true, env = "SLOTCAST_BIN", value_name = "PATH")]
    slotcast: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The booking write path: throughput and p50/p99 through the api beside raw SQL inserts
    /// into an exclusion-constrained table (100 servers), one server as its schedule grows,
    /// and clients that hang up and retry; in a throwaway database.
    Booking(booking::BookingArgs),
    /// Slot boundaries: delay from due time to delivery at a JetStream consumer (p50/p99/max)
    /// and boundaries missing or duplicated, with scheduler replicas as child processes, all
    /// up and with one killed mid-run; in a throwaway database and NATS prefix.
    Slots(slots::SlotsArgs),
    /// Streamer ingest: CPU and memory per stream with 1, 10 and 50 RTSP publishers, beside
    /// ffmpeg remuxing the same input to HLS, and part latency p50/p95 from /metrics; the
    /// streamer is a child process. Needs ffmpeg and NATS; use a release build.
    Ingest(ingest::IngestArgs),
    /// Read-model rebuild: events/s of `slotcast admin rebuild` on an event store of a
    /// million events (1,000 servers' histories decided by the domain, seeded by SQL, untimed);
    /// in a throwaway database.
    Rebuild(rebuild::RebuildArgs),
    /// Serving viewers: the same segments and parts with plain GETs from the streamer's
    /// memory and from nginx serving them as files (rate, p50/p99), and, apart, blocking
    /// playlist reload latency with many viewers waiting on each part. Needs ffmpeg, nginx
    /// and NATS; use a release build.
    Hls(hls::HlsArgs),
    /// Glass-to-glass latency in Chromium, by LL-HLS and by WHEP: frames carrying the server
    /// clock's time (from the api's /v1/time) in a code, published by ffmpeg over RTSP into a
    /// streamer child, read back off the watch page by tests/browser/glass.mjs (median, p95).
    /// Needs ffmpeg, Node, Chromium, Postgres and NATS; use a release build.
    Glass(glass::GlassArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let slotcast = match Slotcast::locate(cli.slotcast) {
        Ok(slotcast) => slotcast,
        Err(err) => {
            eprintln!("slotcast-bench: {err:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("slotcast-bench: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, &slotcast)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("slotcast-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, slotcast: &Slotcast) -> Result<()> {
    match command {
        Command::Booking(args) => booking::booking(args, slotcast).await,
        Command::Slots(args) => slots::slots(args, slotcast).await,
        Command::Ingest(args) => ingest::ingest(args, slotcast).await,
        Command::Rebuild(args) => rebuild::rebuild(args, slotcast).await,
        Command::Hls(args) => hls::hls(args, slotcast).await,
        Command::Glass(args) => glass::glass(args, slotcast).await,
    }
}
