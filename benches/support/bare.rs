//! A bare pingora pass-through: the smallest proxy pingora's own examples build (every request to
//! one origin, nothing else), with the gateway's server settings (one worker thread, the same
//! pingora version). The gateway's free route is held to its cost.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::{http_proxy_service, HttpPeer, ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};

struct Bare {
    origin: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.origin, false, String::new())))
    }
}

/// Starts the bare proxy on `listen` in a thread of its own (it runs for the rest of the
/// process), forwarding everything to `origin`; returns once it accepts connections.
pub fn start(listen: SocketAddr, origin: SocketAddr) {
    std::thread::spawn(move || {
        let conf = ServerConf {
            threads: 1,
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
        server.bootstrap();
        let mut proxy = http_proxy_service(&server.configuration, Bare { origin });
        proxy.add_tcp(&listen.to_string());
        server.add_service(proxy);
        server.run(RunArgs::default());
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the bare proxy did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
