//! What the benchmarks share: `wrk` runs and this process's CPU time (`wrk.rs`), a bare pingora
//! pass-through to compare the gateway with (`bare.rs`), nginx returning a fixed 200
//! (`nginx.rs`), paid-request runs against a fresh anvil (`paid.rs`), and idle keep-alive
//! connections held against a gateway process (`idle.rs`).
//! Each benchmark uses part of it.
#![allow(dead_code)]

pub mod bare;
pub mod idle;
pub mod nginx;
pub mod paid;
pub mod wrk;

/// The `p` quantile of sorted `values`, in milliseconds.
pub fn pct_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Resident memory of process `pid`, in KiB (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
