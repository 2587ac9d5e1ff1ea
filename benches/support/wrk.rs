//! `wrk` runs, measured with the tool the peer figures in `shared/design/peers.md` were measured
//! with (`wrk -t1 -c32`), and this process's CPU time during each (the servers run in this
//! process; wrk runs apart).

use std::process::Command;

/// Whether wrk is installed.
pub fn available() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

pub struct Wrk {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time of the server (this process, unless measured otherwise; wrk runs apart) per
    /// request, in microseconds.
    pub cpu_us: f64,
}

/// User + system CPU seconds of this process so far, from /proc.
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// User + system CPU seconds so far of the process whose `/proc/<pid>/stat` is `path`.
pub fn cpu_seconds_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // /proc reports clock ticks; Linux uses 100 per second (USER_HZ).
    (ticks(11) + ticks(12)) / 100.0
}

/// `wrk -t1 -c32` against `url` for `seconds`.
pub fn wrk(url: &str, seconds: u64) -> Wrk {
    wrk_with(url, seconds, &[])
}

/// `wrk -t1 -c32` with extra arguments (`-H "name: value"`).
pub fn wrk_with(url: &str, seconds: u64, extra: &[&str]) -> Wrk {
    wrk_measuring(url, seconds, extra, &process_cpu_seconds)
}

/// `wrk_with`, reading the server's CPU seconds with `cpu` (for a server in another process).
pub fn wrk_measuring(url: &str, seconds: u64, extra: &[&str], cpu: &dyn Fn() -> f64) -> Wrk {
    let cpu0 = cpu();
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency"])
        .args(extra)
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(|l| {
                l[prefix.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
    };
    let ms = |v: Option<String>| -> f64 {
        let v = v.unwrap_or_default();
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().unwrap_or(0.0) / 1000.0
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().unwrap_or(0.0)
        } else if let Some(x) = v.strip_suffix('s') {
            x.parse::<f64>().unwrap_or(0.0) * 1000.0
        } else {
            0.0
        }
    };
    let cpu = cpu() - cpu0;
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Wrk {
        rps,
        p50_ms: ms(field("50%")),
        p99_ms: ms(field("99%")),
        cpu_us: cpu * 1e6 / (rps * seconds as f64).max(1.0),
    }
}
