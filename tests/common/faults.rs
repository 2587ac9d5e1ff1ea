//! A fault-injecting TCP proxy for the chaos tests, put in front of the RPC node and Postgres:
//! it passes bytes through, or adds latency, stalls every connection, resets them, refuses new
//! ones, or goes half-open (requests reach the server, answers are dropped: a reply lost on the
//! way back). The mode can change at any time and applies to connections already open.
//!
//! A test double for the network, not for a component: what it sits between is real.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Each chunk, either way, waits this long before it is passed on.
    Latency(Duration),
    /// Nothing moves either way; connections stay open. New connections are accepted and stall.
    Stall,
    /// Every open connection is reset (RST) at once, and new ones as soon as they arrive.
    Reset,
    /// The listener is closed: new connections are refused. Open ones are reset.
    Refuse,
    /// Client to server passes; server to client is dropped: requests act, answers are lost.
    HalfOpen,
}

struct Shared {
    mode: Mutex<Mode>,
    /// Bumped when open connections must be cut (Reset, Refuse).
    cut: watch::Sender<u64>,
    /// Told when the listener must close (Refuse) or open again.
    listening: watch::Sender<bool>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl FaultProxy {
    /// A proxy on a port-0 listener forwarding to `target`, on a runtime of its own (so faults
    /// keep playing whatever the test's runtime is doing).
    pub fn start(target: SocketAddr) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std.local_addr().unwrap();
        std.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            cut: watch::channel(0).0,
            listening: watch::channel(true).0,
        });
        let s = shared.clone();
        runtime.spawn(async move {
            let mut first = Some(TcpListener::from_std(std).unwrap());
            let mut listening = s.listening.subscribe();
            loop {
                // Closed while refusing: wait to be told to listen again, then rebind the port.
                while !*listening.borrow_and_update() {
                    first = None;
                    if listening.changed().await.is_err() {
                        return;
                    }
                }
                let listener = match first.take() {
                    Some(l) => l,
                    None => match rebind(addr) {
                        Ok(l) => l,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    },
                };
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok((conn, _)) = accepted {
                                tokio::spawn(serve(conn, target, s.clone()));
                            }
                        }
                        _ = listening.changed() => break,
                    }
                }
            }
        });
        FaultProxy {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    pub fn mode(&self) -> Mode {
        *self.shared.mode.lock().unwrap()
    }

    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        if matches!(mode, Mode::Reset | Mode::Refuse) {
            self.shared.cut.send_modify(|n| *n += 1);
        }
        self.shared.listening.send_replace(mode != Mode::Refuse);
    }
}

fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn mode(s: &Shared) -> Mode {
    *s.mode.lock().unwrap()
}

enum End {
    Closed,
    Reset,
}

/// One connection: pumps both ways in one task, consulting the mode for every chunk.
async fn serve(mut client: TcpStream, target: SocketAddr, s: Arc<Shared>) {
    let mut cut = s.cut.subscribe();
    if matches!(mode(&s), Mode::Reset | Mode::Refuse) {
        let _ = client.set_zero_linger();
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let end = loop {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let step = tokio::select! {
            r = cr.read(&mut up) => match r {
                Ok(0) | Err(_) => Err(End::Closed),
                Ok(n) => pass(&s, &mut cut, &mut sw, &up[..n], false).await,
            },
            r = sr.read(&mut down) => match r {
                Ok(0) | Err(_) => Err(End::Closed),
                Ok(n) => pass(&s, &mut cut, &mut cw, &down[..n], true).await,
            },
            _ = cut.changed() => Err(End::Reset),
        };
        if let Err(end) = step {
            break end;
        }
    };
    if let End::Reset = end {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Passes one chunk on as the mode says.
async fn pass<W: AsyncWriteExt + Unpin>(
    s: &Shared,
    cut: &mut watch::Receiver<u64>,
    to: &mut W,
    data: &[u8],
    answer: bool,
) -> Result<(), End> {
    loop {
        match mode(s) {
            Mode::Pass => break,
            Mode::Latency(d) => {
                tokio::time::sleep(d).await;
                break;
            }
            Mode::Stall => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    _ = cut.changed() => return Err(End::Reset),
                }
            }
            Mode::Reset | Mode::Refuse => return Err(End::Reset),
            Mode::HalfOpen if answer => return Ok(()),
            Mode::HalfOpen => break,
        }
    }
    to.write_all(data).await.map_err(|_| End::Closed)
}
