//! What every benchmark shares around its measurements: stopping cleanly at Ctrl-C, printing
//! the report (a table for people or JSON), and naming the machine the figures came from.
//!
//! Contract: reads only `/proc` for the machine's description; never fails on it (an unknown
//! field reads "unknown").

use std::future::Future;

use anyhow::{anyhow, Result};
use serde::Serialize;

/// The machine the figures came from.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub postgres: String,
}

/// `work` to its end, or "interrupted" at Ctrl-C (so the caller still cleans up).
pub async fn until_interrupted<R>(work: impl Future<Output = Result<R>>) -> Result<R> {
    tokio::select! {
        outcome = work => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    }
}

/// Prints a benchmark's report: pretty JSON with `json`, else its text for people.
pub fn print_report<R: Serialize>(
    report: &R,
    json: bool,
    text: impl Fn(&R) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", text(report));
    }
    Ok(())
}

/// This machine, with `postgres` (its server version) as the benchmark found it.
pub fn machine(postgres: String) -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: if kernel.is_empty() {
            "unknown".to_string()
        } else {
            kernel
        },
        cpu_model,
        postgres,
    }
}
