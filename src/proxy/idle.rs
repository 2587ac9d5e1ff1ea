//! Idle keep-alive connections parked with nothing allocated but the socket.
//!
//! pingora's HTTP/1 loop (`HttpServerApp`'s `process_new`) waits for a connection's next request
//! inside `process_new_http`: the proxy's boxed future and the session's 4 KiB header buffer are
//! allocated before the first byte arrives and stay allocated while the client idles. heaptrack
//! of 2,000 idle connections put that at about half of the 45 KiB each one held (the rest: the
//! connection's L4 buffers and its task). A gateway that holds thousands of idle client pools
//! pays that for nothing.
//!
//! `Parked` is the same loop with three changes. Before each request it waits for the request's
//! first bytes itself, on the bare stream, reading them into a buffer on the stack of one poll
//! and putting them back (`rewind`), so pingora's session, buffer and future are built only once
//! a request is there. The write buffer is ours (`write_buffer.rs`), given back before each wait.
//! And the loop runs in a task of its own, so pingora's accept task (whose future keeps room for
//! a TLS handshake, about 8.6 KiB) ends as soon as the connection is handed over. Everything else
//! is pingora's: the keep-alive timeout (pingora's 60 s, and the same timeout while waiting
//! here), the reuse limit, the per-request settings carried from one request to the next. Streams
//! it cannot park (TLS, where ALPN may pick HTTP/2; h2c) take pingora's own path untouched.
//!
//! It relies on HTTP/1.1 pipelining staying off (pingora's default; the gateway never calls
//! `set_pipelining_enabled`): with it on, pingora would carry a second request already read in
//! its settings, and this wait, which watches the socket, would not see it.
//! `tests/hostile.rs::pipelined_requests_never_leave_the_second_waiting` guards that.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::write_buffer::WriteBuffer;
use super::Gateway;

/// How long a connection may idle between requests: pingora's own keep-alive timeout for HTTP/1
/// (`process_new` sets 60 s), applied here to the wait it replaces.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// The most a wait reads before handing over: a request head of this size arrives whole in one
/// read, so pingora's first read is served from the bytes put back and no read is added.
const FIRST_READ: usize = 4096;

/// A pingora HTTP app (`HttpProxy`) whose idle HTTP/1 connections wait without buffers.
pub struct Parked<A> {
    inner: Arc<A>,
    /// Answers the requests it can from their first bytes, without pingora (`quick.rs`).
    quick: Option<Arc<Gateway>>,
}

impl<A> Parked<A> {
    pub fn new(inner: A) -> Self {
        Parked {
            inner: Arc::new(inner),
            quick: None,
        }
    }

    /// `new`, with `gateway` answering unpaid requests for priced routes itself (`quick.rs`).
    pub fn with_quick(inner: A, gateway: Gateway) -> Self {
        Parked {
            inner: Arc::new(inner),
            quick: Some(Arc::new(gateway)),
        }
    }
}

/// What a wait for the next request's first bytes found.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The first bytes of a request (up to 4 KiB: a usual head whole), taken off the stream:
    /// put them back (`rewind`) for pingora to read them again.
    Request(Vec<u8>),
    /// The client closed the connection, or it broke: nothing to serve.
    Closed,
    /// Nothing came within the keep-alive timeout.
    TimedOut,
}

/// Waits for the first bytes of the next request on `stream`, holding no buffer while it waits:
/// each poll reads into a buffer on its own stack, and only what it read is kept.
pub async fn next_request(stream: &mut TcpStream, idle: Duration) -> Arrival {
    let first = std::future::poll_fn(|cx| {
        let mut space = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut buf = ReadBuf::uninit(&mut space);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Arrival::Closed),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Arrival::Closed),
            Poll::Ready(Ok(())) => Poll::Ready(Arrival::Request(buf.filled().to_vec())),
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
        let tcp: Box<TcpStream> = stream.into_any().downcast().ok()?;
        // The connection goes on in a task of its own, and pingora's accept task ends here:
        // that task's future holds a TLS handshake's state inline whether the stream is TLS or
        // not (about 8.6 KiB, `run_endpoint` in pingora-core), for as long as the connection
        // lives. Ours holds the loop below. Same runtime, same shutdown watch: pingora never
        // waited on its connection tasks either (they were spawned and let go the same way).
        let parked = Arc::clone(self);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            parked
                .serve(Box::new(WriteBuffer::new(tcp)), shutdown)
                .await
        });
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

impl<A> Parked<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// One request on `conn`: its session, set up as pingora's loop sets it up, handed to the
    /// proxy. A plain function, not part of `serve`'s future: a session (about 800 bytes) that
    /// lived in that future, even moved out, would be room every idle connection keeps.
    fn request<'a>(
        &'a self,
        conn: Box<WriteBuffer>,
        carried: Option<Option<HttpPersistentSettings>>,
        shutdown: &'a ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'a>> {
        let mut session = ServerSession::new_http1(conn);
        match carried {
            // A reused connection: its settings from the request before (keep-alive, requests
            // left), as pingora's loop applies them.
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
        self.inner.process_new_http(session, shutdown)
    }

    /// The quick answer to the request whose first bytes are `bytes`, written on `conn`, when the
    /// gateway takes it (`quick.rs`): whether the connection goes on; `None` leaves the request
    /// to pingora, untouched. Pure until the gateway takes it. A
    /// plain function returning a boxed future, as `request`, so that `serve`'s future keeps no
    /// room for it.
    fn quick<'a>(
        &'a self,
        bytes: &[u8],
        conn: &'a mut WriteBuffer,
        shutdown: &ShutdownWatch,
    ) -> Option<Pin<Box<dyn Future<Output = Option<bool>> + Send + 'a>>> {
        let gateway = self.quick.as_ref()?;
        // pingora counts a connection's requests against its reuse limit in the session, and
        // closes new connections once shutting down: both are pingora's to do.
        let reuse_limited = self
            .inner
            .server_options()
            .is_some_and(|o| o.keepalive_request_limit.is_some());
        if reuse_limited || *shutdown.borrow() {
            return None;
        }
        let head = gateway.take(bytes)?;
        let client = conn.client_ip();
        Some(Box::pin(
            async move { gateway.quick(&head, client, conn).await },
        ))
    }

    /// pingora's HTTP/1 keep-alive loop, waiting for each request before building its session.
    ///
    /// The connection stays boxed from one request to the next: pingora takes it as a boxed
    /// stream and hands the same box back, so no request allocates one.
    async fn serve(self: Arc<Self>, mut conn: Box<WriteBuffer>, shutdown: ShutdownWatch) {
        // `None` before the first request; then what pingora carried from the request before.
        let mut carried: Option<Option<HttpPersistentSettings>> = None;
        loop {
            // Idle from here: nothing buffered, nothing held. Bytes a response left unsent (not
            // pingora's way: it flushes each one) go first, within the keep-alive timeout.
            if !conn.release() {
                match tokio::time::timeout(KEEPALIVE_IDLE, conn.flush()).await {
                    Ok(Ok(())) => {
                        conn.release();
                    }
                    _ => return,
                }
            }
            let Arrival::Request(first) = next_request(conn.stream_mut(), KEEPALIVE_IDLE).await
            else {
                return;
            };
            if let Some(quick) = self.quick(&first, &mut conn, &shutdown) {
                match quick.await {
                    Some(true) => continue,
                    Some(false) => return,
                    None => {}
                }
            }
            conn.stream_mut().rewind(&first);
            drop(first);
            let request = self.request(conn, carried.take(), &shutdown);
            let Some(reused) = request.await else {
                return;
            };
            let (stream, settings) = reused.consume();
            // pingora hands back the stream it was given; were it ever another kind, it is
            // served from here as pingora's own loop (`Service::handle_event`) would serve it,
            // by the proxy's `process_new` until it is not reused.
            if !stream.as_any().is::<WriteBuffer>() {
                let mut next = Some(stream);
                while let Some(stream) = next {
                    next = ServerApp::process_new(&self.inner, stream, &shutdown).await;
                }
                return;
            }
            let Ok(stream) = stream.into_any().downcast::<WriteBuffer>() else {
                return;
            };
            conn = stream;
            carried = Some(settings);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! `next_request` on real loopback sockets.

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: the client's socket and the server's, as pingora's stream.
    pub(in crate::proxy) async fn pair() -> (tokio::net::TcpStream, TcpStream) {
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
        let Arrival::Request(first) = next_request(&mut server, Duration::from_secs(5)).await
        else {
            panic!("no request arrived");
        };
        assert!(!first.is_empty() && first.len() <= FIRST_READ);
        assert_eq!(first, sent[..first.len()]);
        server.rewind(&first);
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes came back out of order");
    }

    #[tokio::test]
    async fn a_wait_ends_on_the_first_byte_of_a_slow_request() {
        let (mut client, mut server) = pair().await;
        let wait =
            tokio::spawn(async move { next_request(&mut server, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!wait.is_finished(), "the wait ended before any byte came");
        client.write_all(b"G").await.unwrap();
        assert_eq!(wait.await.unwrap(), Arrival::Request(b"G".to_vec()));
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

    /// What every idle connection keeps besides its socket is its loop's future (and tokio's
    /// task around it): it must not hold room for a request's session (about 800 bytes, kept
    /// in the future when the session was a local of the loop, even moved out) or for pingora's
    /// accept task. 376 bytes in a debug build here (352 before the quick answer, whose future is
    /// boxed apart); 1,032 with the session in the loop.
    #[tokio::test]
    async fn a_parked_connections_future_stays_small() {
        /// The smallest proxy there is: only its type matters, for the size of the loop's future.
        struct Nothing;
        #[async_trait]
        impl pingora::proxy::ProxyHttp for Nothing {
            type CTX = ();
            fn new_ctx(&self) {}
            async fn upstream_peer(
                &self,
                _: &mut pingora::proxy::Session,
                _: &mut (),
            ) -> pingora::Result<Box<pingora::upstreams::peer::HttpPeer>> {
                unreachable!("never polled")
            }
        }
        let parked = Arc::new(Parked::new(pingora::proxy::http_proxy(
            &Default::default(),
            Nothing,
        )));
        let (_client, server) = pair().await;
        let (_shutdown, watch) = tokio::sync::watch::channel(false);
        let serve = parked.serve(Box::new(WriteBuffer::new(Box::new(server))), watch);
        let size = std::mem::size_of_val(&serve);
        assert!(size <= 512, "a parked connection's future is {size} bytes");
    }
}
