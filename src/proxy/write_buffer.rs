//! A plain TCP connection's write buffer, held only while a response is being written.
//!
//! pingora writes a response's head and its body in separate writes; a write buffer joins them
//! so a small response (a 402 challenge) leaves in one `send`. pingora's own buffer (the
//! listener's `L4BufferSettings`) is allocated when a connection is accepted and kept for the
//! connection's life, idle or not: 4 KiB for each of 10,000 idle keep-alive connections is
//! 40 MiB that holds nothing. `WriteBuffer` is the same buffer, allocated on a response's first
//! write and given back (`release`) when its connection parks to wait for the next request
//! (`proxy::idle`). Plain TCP listeners are therefore configured with no pingora write buffer;
//! TLS connections keep pingora's (they take pingora's own loop).
//!
//! Writes behave as tokio's `BufWriter`'s, which pingora's buffer is: a write that fits is
//! copied; one that does not first sends what is buffered; one as large as the buffer goes
//! straight to the socket; vectored writes likewise, as one; `flush` and `shutdown` send what
//! is buffered first. Reads pass through untouched.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How much a response's writes are gathered before they are sent: a challenge of up to about
/// four offers (each adds about 750 bytes to the `PAYMENT-REQUIRED` header and the v1 body)
/// leaves in one `send`.
pub const CAPACITY: usize = 4 * 1024;

/// A TCP stream with a write buffer that exists only while there is something to write.
#[derive(Debug)]
pub struct WriteBuffer {
    stream: Box<TcpStream>,
    /// Bytes written and not yet sent. No capacity while the connection idles.
    out: Vec<u8>,
}

impl WriteBuffer {
    pub fn new(stream: Box<TcpStream>) -> Self {
        WriteBuffer {
            stream,
            out: Vec::new(),
        }
    }

    /// The stream under the buffer, for reads that must bypass it (the idle wait).
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The client's IP address (pingora's socket digest, from `getpeername` once a connection).
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        let digest = self.stream.get_socket_digest()?;
        digest.peer_addr()?.as_inet().map(|a| a.ip())
    }

    /// Gives the buffer back when nothing in it waits to be sent: the connection is about to
    /// idle. Returns whether it did (pingora ends every response with a flush, so it does unless
    /// a response was cut short).
    pub fn release(&mut self) -> bool {
        if !self.out.is_empty() {
            return false;
        }
        if self.out.capacity() > 0 {
            spare::give(std::mem::take(&mut self.out));
        }
        true
    }

    /// Buffers `bufs` (`total` bytes, which fit), taking a buffer for the response if it has
    /// none yet: once per response, a whole one, never grown piece by piece.
    fn keep(&mut self, bufs: &[IoSlice<'_>], total: usize) -> Poll<std::io::Result<usize>> {
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.out.capacity() == 0 {
            self.out = spare::take();
        }
        for b in bufs {
            self.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    /// Sends the buffered bytes, keeping on a partial write what the socket has not taken.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.out.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut *self.stream).poll_write(cx, &self.out[sent..]) {
                Poll::Ready(Ok(0)) => {
                    break Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "the connection took none of the buffered response",
                    )))
                }
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.out.drain(..sent);
        result
    }
}

impl AsyncRead for WriteBuffer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteBuffer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.out.len() + buf.len() > CAPACITY {
            ready!(self.poll_send(cx))?;
        }
        if buf.len() >= CAPACITY {
            return Pin::new(&mut *self.stream).poll_write(cx, buf);
        }
        self.keep(&[IoSlice::new(buf)], buf.len())
    }

    /// As `poll_write`, for pieces written together: pingora writes a chunked body's frame (its
    /// size line, the data, CRLF) so, and a frame too large for the buffer leaves in one
    /// `writev` with what was buffered sent before it, as through tokio's `BufWriter`.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let total = bufs.iter().fold(0usize, |n, b| n.saturating_add(b.len()));
        if self.out.len().saturating_add(total) > CAPACITY {
            ready!(self.poll_send(cx))?;
        }
        if total >= CAPACITY {
            return Pin::new(&mut *self.stream).poll_write_vectored(cx, bufs);
        }
        self.keep(bufs, total)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut *self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut *self.stream).poll_shutdown(cx)
    }
}

impl Drop for WriteBuffer {
    /// As pingora's own buffer does when its stream is dropped: one try, without waiting, to
    /// send what is left.
    fn drop(&mut self) {
        if !self.out.is_empty() {
            let _ = self.poll_send(&mut Context::from_waker(Waker::noop()));
        }
        self.release();
    }
}

/// Buffers given back by connections that went idle, kept per thread for the next response.
/// A 4 KiB allocation is in glibc's large-chunk range, where each `malloc` first consolidates
/// the small freed chunks: allocating and freeing one per response cost about 1.2k instructions
/// a request (callgrind, the 402 path). At most `KEPT` wait per thread, so idle connections
/// still hold nothing and the threads little (`KEPT` x 4 KiB each).
mod spare {
    use std::cell::RefCell;

    use super::CAPACITY;

    pub(super) const KEPT: usize = 16;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer of `CAPACITY`: one given back on this thread, or a new one.
    pub(super) fn take() -> Vec<u8> {
        SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| Vec::with_capacity(CAPACITY))
    }

    /// Keeps `buf` for this thread's next response, or frees it when enough are kept.
    pub(super) fn give(mut buf: Vec<u8>) {
        buf.clear();
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < KEPT && buf.capacity() == CAPACITY {
                spare.push(buf);
            }
        });
    }

    #[cfg(test)]
    pub(super) fn kept() -> usize {
        SPARE.with(|spare| spare.borrow().len())
    }
}

// What pingora asks of a stream, answered by the stream under the buffer.

#[async_trait]
impl Shutdown for WriteBuffer {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(self).await {
            tracing::debug!("failed to shut the connection down: {e}");
        }
    }
}

impl UniqueID for WriteBuffer {
    fn id(&self) -> UniqueIDType {
        self.stream.id()
    }
}

impl Ssl for WriteBuffer {}

impl GetTimingDigest for WriteBuffer {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.stream.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.stream.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.stream.get_write_pending_time()
    }
}

impl GetProxyDigest for WriteBuffer {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.stream.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.stream.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for WriteBuffer {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.stream.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.stream.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for WriteBuffer {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.stream.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    //! On real loopback sockets: what leaves in how many `send`s is read back on the client's
    //! side as separate reads where the writes were separate.

    use super::*;
    use tokio::io::AsyncReadExt;

    async fn pair() -> (tokio::net::TcpStream, WriteBuffer) {
        let (client, server) = super::super::idle::tests::pair().await;
        (client, WriteBuffer::new(Box::new(server)))
    }

    /// Reads whatever is there within a short wait, or nothing.
    async fn available(client: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut buf = vec![0u8; 64 * 1024];
        match tokio::time::timeout(Duration::from_millis(100), client.read(&mut buf)).await {
            Ok(Ok(n)) => buf[..n].to_vec(),
            _ => Vec::new(),
        }
    }

    #[tokio::test]
    async fn small_writes_wait_for_the_flush_and_leave_together() {
        let (mut client, mut server) = pair().await;
        server
            .write_all(b"HTTP/1.1 402 Payment Required\r\n\r\n")
            .await
            .unwrap();
        server.write_all(b"{\"x402Version\":1}").await.unwrap();
        assert!(server.out.capacity() >= CAPACITY);
        assert_eq!(available(&mut client).await, b"", "sent before the flush");
        server.flush().await.unwrap();
        assert_eq!(
            available(&mut client).await,
            b"HTTP/1.1 402 Payment Required\r\n\r\n{\"x402Version\":1}"
        );
    }

    #[tokio::test]
    async fn release_frees_the_buffer_only_once_it_is_sent() {
        let (mut client, mut server) = pair().await;
        server.write_all(b"left over").await.unwrap();
        assert!(!server.release(), "released with bytes unsent");
        assert!(server.out.capacity() >= CAPACITY);
        server.flush().await.unwrap();
        assert!(server.release());
        assert_eq!(server.out.capacity(), 0, "the buffer is kept while idle");
        assert_eq!(available(&mut client).await, b"left over");
        // The next response gets a buffer again.
        server.write_all(b"again").await.unwrap();
        assert!(server.out.capacity() >= CAPACITY);
        server.flush().await.unwrap();
        assert_eq!(available(&mut client).await, b"again");
    }

    #[tokio::test]
    async fn writes_past_the_buffer_keep_their_order() {
        let (mut client, mut server) = pair().await;
        // Sizes around the capacity: fits, overflows what is held, larger than the buffer.
        let sizes = [10, CAPACITY - 5, 7, CAPACITY, 1, 3 * CAPACITY + 11, 2];
        let mut sent = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let chunk: Vec<u8> = (0..*n).map(|k| ((i * 31 + k) % 251) as u8).collect();
            server.write_all(&chunk).await.unwrap();
            sent.extend_from_slice(&chunk);
        }
        AsyncWriteExt::shutdown(&mut server).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes arrived out of order");
    }

    /// Through pingora's own HTTP/1 session, as the gateway writes a challenge: the head is held
    /// until the body ends, then both leave in one write, and the connection comes back to be
    /// parked with its buffer given back.
    #[tokio::test]
    async fn a_pingora_response_leaves_whole_when_its_body_ends() {
        use pingora::http::ResponseHeader;
        use pingora::protocols::http::ServerSession;
        let (mut client, server) = pair().await;
        client
            .write_all(b"GET /paid HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut session = ServerSession::new_http1(Box::new(server));
        assert!(session.read_request().await.unwrap());
        let body = bytes::Bytes::from_static(b"{\"x402Version\":1,\"accepts\":[]}");
        let mut head = ResponseHeader::build(402, None).unwrap();
        head.insert_header("content-length", body.len().to_string())
            .unwrap();
        head.insert_header("payment-required", "e30=").unwrap();
        session.write_response_header(Box::new(head)).await.unwrap();
        assert_eq!(available(&mut client).await, b"", "the head left alone");
        session.write_response_body(body, true).await.unwrap();
        let reused = session.finish().await.unwrap().expect("kept alive");
        let got = available(&mut client).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 402"), "{text}");
        assert!(
            text.ends_with("{\"x402Version\":1,\"accepts\":[]}"),
            "{text}"
        );
        let (stream, _) = reused.into_parts();
        let mut conn = stream.into_any().downcast::<WriteBuffer>().unwrap();
        assert!(conn.release(), "pingora left bytes unsent");
        assert_eq!(conn.out.capacity(), 0);
    }

    /// A buffer given back is the next response's on the same thread, not a new allocation;
    /// the thread keeps only a few.
    #[tokio::test]
    async fn buffers_given_back_are_reused_and_only_a_few_are_kept() {
        let mut conns = Vec::new();
        for _ in 0..spare::KEPT + 8 {
            let (client, mut server) = pair().await;
            server.write_all(b"x").await.unwrap();
            conns.push((client, server));
        }
        let before = spare::kept();
        let mut given = Vec::new();
        for (_, server) in conns.iter_mut() {
            server.flush().await.unwrap();
            given.push(server.out.as_ptr());
            assert!(server.release());
        }
        assert_eq!(spare::kept(), spare::KEPT, "kept before: {before}");
        let (_client, mut next) = pair().await;
        next.write_all(b"y").await.unwrap();
        assert!(
            given.contains(&next.out.as_ptr()),
            "a new buffer while {} were kept",
            spare::kept()
        );
        assert_eq!(spare::kept(), spare::KEPT - 1);
    }

    /// Pieces written together (a chunked body's frame: size line, data, CRLF) are buffered
    /// together when they fit, and otherwise leave as one vectored write after what was
    /// buffered, in order.
    #[tokio::test]
    async fn vectored_writes_are_buffered_or_sent_whole_in_order() {
        let (mut client, mut server) = pair().await;
        assert!(server.is_write_vectored());
        let small = [
            IoSlice::new(b"5\r\n"),
            IoSlice::new(b"hello"),
            IoSlice::new(b"\r\n"),
        ];
        assert_eq!(server.write_vectored(&small).await.unwrap(), 10);
        assert_eq!(available(&mut client).await, b"", "sent before the flush");
        let data = vec![b'z'; 2 * CAPACITY];
        let large = [
            IoSlice::new(b"2000\r\n"),
            IoSlice::new(&data),
            IoSlice::new(b"\r\n"),
        ];
        // One `writev`: a loopback socket takes 8 KiB at once.
        let sent = server.write_vectored(&large).await.unwrap();
        assert_eq!(sent, 6 + data.len() + 2, "a partial vectored write");
        assert!(server.out.is_empty(), "the large frame was buffered");
        AsyncWriteExt::shutdown(&mut server).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let mut want = b"5\r\nhello\r\n2000\r\n".to_vec();
        want.extend_from_slice(&data);
        want.extend_from_slice(b"\r\n");
        assert!(got == want, "{} bytes, not in order", got.len());
    }

    #[tokio::test]
    async fn dropped_with_bytes_buffered_it_still_sends_them() {
        let (mut client, mut server) = pair().await;
        server.write_all(b"last words").await.unwrap();
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
    }
}
