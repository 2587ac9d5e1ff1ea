//! nginx returning a fixed 200: the cost of answering a request with nothing behind it, which the
//! gateway's 402 is held to. One worker process (the servers under test run one worker thread),
//! no access log, started in a directory of its own and stopped when dropped. Its CPU is read
//! from /proc, as it runs apart from this process.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Where Debian puts nginx (`apt-get install nginx-light`), or whatever `nginx` is on the PATH.
fn binary() -> Option<String> {
    ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("-v")
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .map(str::to_string)
}

impl Nginx {
    /// Starts nginx on `addr` answering every request with a fixed 200; `None` when nginx is not
    /// installed.
    pub fn start(addr: SocketAddr) -> Option<Nginx> {
        let bin = binary()?;
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("nginx.conf");
        // `master_process off`: one process does the work, so its CPU is all there is to read.
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\nuser root;\n\
                 pid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {dir};\n  \
                 proxy_temp_path {dir};\n  fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  \
                 scgi_temp_path {dir};\n  server {{\n    listen {addr};\n    \
                 location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
                dir = dir.path().display(),
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .args(["-p", &dir.path().display().to_string(), "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let nginx = Nginx {
            child,
            addr,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_err() {
            if std::time::Instant::now() > deadline {
                eprintln!("nginx did not start on {addr}: its row is skipped");
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(nginx)
    }

    /// nginx's user + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        super::wrk::cpu_seconds_of(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
