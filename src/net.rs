//! Listening sockets of the gateway's own HTTP endpoints (management API, metrics).
//!
//! pingora hands the proxy's listening sockets to the new process of a graceful upgrade; these
//! two it does not know about. They are bound with `SO_REUSEPORT`, so the new process binds them
//! while the old one still serves and drains: the kernel spreads new connections over both until
//! the old one closes its socket. (Linux lets only processes of the same user share a port this
//! way.) May import: nothing internal.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// The backlog of these low-traffic listeners.
const BACKLOG: u32 = 1024;

/// A listener on `addr` that a successor process may bind too (see the module doc).
pub fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
