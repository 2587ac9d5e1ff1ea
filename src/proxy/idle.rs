//! Idle keep-alive connections parked with nothing allocated but the socket.
//!
//! pingora's HTTP/1 loop (`HttpServerApp`'s `process_new`) waits for a connection's next request
//! inside `process_new_http`: the proxy's boxed future and the session's 4 KiB header buffer are
//! allocated before the first byte arrives and stay allocated while the client idles. heaptrack
//! of 2,000 idle connections put that at about half of the 45 KiB each one held (the rest: the
//! connection's L4 buffers and its task). A gateway that holds thousands of idle client pools
//! pays that for nothing.
//!
//! `Parked` is the same loop with one change: before each request it waits for the request's
//! first bytes itself, on the bare stream, reading them into a buffer on the stack of one poll
//! and putting them back (`rewind`), so pingora's session, buffer and future are built only once
//! a request is there. Everything else is pingora's: the keep-alive timeout (pingora's 60 s, and
//! the same timeout while waiting here), the reuse limit, the per-request settings carried from
//! one request to the next. Streams it cannot park (TLS, where ALPN may pick HTTP/2; h2c) take
//! pingora's own path untouched.
//!
//! It relies on HTTP/1.1 pipelining staying off (pingora's default; the gateway never calls
//! `set_pipelining_enabled`): with it on, pingora would carry a second request already read in
//! its settings, and this wait, which watches the socket, would not see it.
//! `tests/hostile.rs::pipelined_requests_never_leave_the_second_waiting` guards that.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};

/// How long a connection may idle between requests: pingora's own keep-alive timeout for HTTP/1
/// (`process_new` sets 60 s), applied here to the wait it replaces.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// The most a wait reads before handing over: a request head of this size arrives whole in one
/// read, so pingora's first read is served from the bytes put back and no read is added.
const FIRST_READ: usize = 4096;

/// A pingora HTTP app (`HttpProxy`) whose idle HTTP/1 connections wait without buffers.
pub struct Parked<A> {
    inner: Arc<A>,
}

impl<A> Parked<A> {
    pub fn new(inner: A) -> Self {
        Parked {
            inner: Arc::new(inner),
        }
    }
}

/// What a wait for the next request's first bytes found.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Bytes are there (put back on the stream, to be read again).
    Request,
    /// The client closed the connection, or it broke: nothing to serve.
    Closed,
    /// Nothing came within the keep-alive timeout.
    TimedOut,
}

/// Waits for the first bytes of the next request on `stream`, holding no buffer while it waits:
/// each poll reads into a buffer on its own stack and puts what it read back (`rewind`).
pub async fn next_request(stream: &mut TcpStream, idle: Duration) -> Arrival {
    let first = std::future::poll_fn(|cx| {
        let mut space = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut buf = ReadBuf::uninit(&mut space);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Arrival::Closed),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Arrival::Closed),
            Poll::Ready(Ok(())) => {
                stream.rewind(buf.filled());
                Poll::Ready(Arrival::Request)
            }
        }
    });
    tokio::time::timeout(idle, first)
        .await
        .unwrap_or(Arrival::TimedOut)
}

#[async_trait]
impl<A> ServerApp for Parked<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let h2c = self.inner.server_options().is_some_and(|o| o.h2c);
        if h2c || !stream.as_any().is::<TcpStream>() {
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        let mut tcp: Box<TcpStream> = stream.into_any().downcast().ok()?;
        // `None` before the first request; then what pingora carried from the request before.
        let mut carried: Option<Option<HttpPersistentSettings>> = None;
        loop {
            if next_request(&mut tcp, KEEPALIVE_IDLE).await != Arrival::Request {
                return None;
            }
            let mut session = ServerSession::new_http1(tcp);
            match carried.take() {
                // A reused connection: its settings from the request before (keep-alive,
                // requests left), as pingora's loop applies them.
                Some(Some(settings)) => settings.apply_to_session(&mut session),
                Some(None) => {}
                // A new connection, set up as pingora's loop does.
                None if *shutdown.borrow() => session.set_keepalive(None),
                None => {
                    session.set_keepalive(Some(KEEPALIVE_IDLE.as_secs()));
                    session.set_keepalive_reuses_remaining(
                        self.inner
                            .server_options()
                            .and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            let (stream, settings) = self
                .inner
                .process_new_http(session, shutdown)
                .await?
                .consume();
            // pingora hands back the stream it was given; were it ever another kind, it goes back
            // to pingora's own loop (`handle_event` calls `process_new` again with it).
            if !stream.as_any().is::<TcpStream>() {
                return Some(stream);
            }
            tcp = stream.into_any().downcast().ok()?;
            carried = Some(settings);
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    //! `next_request` on real loopback sockets.

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: the client's socket and the server's, as pingora's stream.
    async fn pair() -> (tokio::net::TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, TcpStream::from(server))
    }

    #[tokio::test]
    async fn the_bytes_that_end_the_wait_are_read_again_in_order() {
        let (mut client, mut server) = pair().await;
        // More than one wait's read, so some is put back and the rest still waits in the socket.
        let sent: Vec<u8> = (0..3 * FIRST_READ + 17).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(
            next_request(&mut server, Duration::from_secs(5)).await,
            Arrival::Request
        );
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes came back out of order");
    }

    #[tokio::test]
    async fn a_wait_ends_on_the_first_byte_of_a_slow_request() {
        let (mut client, mut server) = pair().await;
        let wait = tokio::spawn(async move {
            let arrival = next_request(&mut server, Duration::from_secs(5)).await;
            let mut first = [0u8; 1];
            server.read_exact(&mut first).await.unwrap();
            (arrival, first[0])
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!wait.is_finished(), "the wait ended before any byte came");
        client.write_all(b"G").await.unwrap();
        let (arrival, first) = wait.await.unwrap();
        assert_eq!(arrival, Arrival::Request);
        assert_eq!(first, b'G');
    }

    #[tokio::test]
    async fn a_client_that_closes_or_idles_too_long_ends_the_connection() {
        let (client, mut server) = pair().await;
        drop(client);
        assert_eq!(
            next_request(&mut server, Duration::from_secs(5)).await,
            Arrival::Closed
        );
        let (_client, mut server) = pair().await;
        assert_eq!(
            next_request(&mut server, Duration::from_millis(100)).await,
            Arrival::TimedOut
        );
    }
}
