//! Idle keep-alive connections held against a gateway process: each sends one request on a
//! free route, reads the answer and stays open, as a client pool between bursts does. The
//! gateway runs as its own process (the real binary), so its resident memory is its own.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The gateway binary on `config` (a file), until dropped.
pub struct Process {
    pub child: Child,
    pub listen: SocketAddr,
}

impl Process {
    /// Starts the binary, under `X402_BENCH_WRAP`'s command when it is set (a profiler:
    /// `perf record -g`, `valgrind --tool=callgrind`), and waits for it to listen.
    pub fn start(config: &Path, listen: SocketAddr) -> Process {
        let wrap = std::env::var("X402_BENCH_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut command = match wrap.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(wrap).arg(env!("CARGO_BIN_EXE_x402-gate"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_x402-gate")),
        };
        let child = command
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the gateway binary starts");
        // A profiler slows the start-up down many times over.
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(Instant::now() < deadline, "the gateway did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Process { child, listen }
    }

    pub fn rss_kib(&self) -> u64 {
        super::rss_kib(self.child.id())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A profiler writes its figures when the process exits on its own: SIGTERM, a graceful
        // shutdown, before the kill.
        if std::env::var("X402_BENCH_WRAP").is_ok_and(|w| !w.is_empty()) {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(120);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `n` connections to `listen`, each answered once on `path` and then kept open, idle.
/// Returns them (dropping them closes them) and how many got their answer.
pub async fn hold(listen: SocketAddr, path: &str, n: usize) -> (Vec<TcpStream>, usize) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n");
    let mut held = Vec::with_capacity(n);
    let mut answered = 0;
    // In waves, so the listener's backlog is never the limit.
    for wave in (0..n).collect::<Vec<_>>().chunks(500) {
        let opened: Vec<_> = wave
            .iter()
            .map(|_| {
                let request = request.clone();
                tokio::spawn(async move {
                    let mut s = TcpStream::connect(listen).await.ok()?;
                    s.write_all(request.as_bytes()).await.ok()?;
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    // Headers and the (small, length-delimited) body of the free route's echo.
                    while !complete(&got) {
                        let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                            .await
                            .ok()?
                            .ok()?;
                        if k == 0 {
                            return None;
                        }
                        got.extend_from_slice(&buf[..k]);
                    }
                    Some(s)
                })
            })
            .collect();
        for o in opened {
            if let Ok(Some(s)) = o.await {
                answered += 1;
                held.push(s);
            }
        }
    }
    (held, answered)
}

/// Whether `got` holds a whole response with a Content-Length body.
fn complete(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return got.ends_with(b"0\r\n\r\n");
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    got.len() >= end + 4 + len
}
