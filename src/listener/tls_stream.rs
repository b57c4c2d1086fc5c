//! TLS on client connections, on rustls's unbuffered API.
//!
//! rustls's buffered connection keeps a 4 KiB read buffer for as long as
//! the connection lives, used or not: two fifths of what an idle TLS+HTTP/2
//! connection cost torii. Here torii owns the buffers: what was read and not
//! yet decrypted, and what was encrypted and not yet written. Both go back
//! to a small per-thread pool as soon as they are empty, so an idle
//! connection holds neither, and a busy thread reuses the same few (no
//! allocation, no zeroing per read or write). Reads take up to
//! [`READ_SIZE`] at a time (rustls's own reader takes 4 KiB), and records
//! are encrypted straight into the write buffer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use std::cell::RefCell;

use bytes::{Buf, BytesMut};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, UnbufferedStatus,
};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much one read from the socket may take: a full TLS record and then
/// some, so a large message is not read 4 KiB at a time.
const READ_SIZE: usize = 32 * 1024;
/// Bytes read but not yet decrypted, at most: a handshake message may span
/// records (client certificate chains), and rustls takes up to 64 KiB.
const MAX_INCOMING: usize = 0x1_0000 + 16 * 1024 + 512;
/// Encrypted bytes waiting for the socket above which writes wait.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Plaintext taken per write (two full records): what one write grows
/// the write buffer by at most.
const MAX_WRITE: usize = 32 * 1024;

/// Buffers of each kind kept per thread for the next connection that needs
/// one: at most 2 × 4 × [`POOLED_MAX`] per worker thread, however many
/// connections there are.
const POOLED: usize = 4;
/// Buffers larger than this (a read that had to grow around a partial
/// record, writes that piled up behind a slow client) are freed rather
/// than pooled.
const POOLED_MAX: usize = 36 * 1024;

thread_local! {
    /// Read buffers (their length means nothing).
    static READ_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Write buffers, initialised up to their length (rustls encrypts into
    /// initialised memory; kept so, they are zeroed once, not per write).
    static WRITE_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

type Pool = std::thread::LocalKey<RefCell<Vec<Vec<u8>>>>;

/// A buffer from this thread's `pool`, or a new empty one.
fn take_buffer(pool: &'static Pool) -> Vec<u8> {
    pool.with(|p| p.borrow_mut().pop()).unwrap_or_default()
}

/// Returns `buf` to this thread's `pool` (or frees it) and leaves an empty
/// vector, which holds no memory, in its place.
fn give_buffer(pool: &'static Pool, buf: &mut Vec<u8>) {
    let buf = std::mem::take(buf);
    if buf.capacity() == 0 || buf.capacity() > POOLED_MAX {
        return;
    }
    pool.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED {
            p.push(buf);
        }
    });
}

/// Terminates TLS with a listener's configuration.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
}

impl From<Arc<ServerConfig>> for TlsAcceptor {
    fn from(config: Arc<ServerConfig>) -> Self {
        TlsAcceptor { config }
    }
}

impl TlsAcceptor {
    /// Runs the server side of the handshake on `io`. Errors carry the
    /// `rustls::Error` (kind `InvalidData`) when TLS itself failed; the
    /// client is sent the alert first, as far as its socket takes it.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let conn = UnbufferedServerConnection::new(self.config.clone()).map_err(invalid)?;
        let mut stream = TlsStream {
            io,
            conn,
            incoming: Vec::new(),
            in_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            out_end: 0,
            plain: BytesMut::new(),
            peer_closed: false,
            eof: false,
            close_queued: false,
            failed: None,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }
}

/// A client connection after the TLS handshake.
pub struct TlsStream<IO> {
    io: IO,
    conn: UnbufferedServerConnection,
    /// TLS bytes read and not yet processed: `incoming[in_pos..]`; pooled
    /// when empty.
    incoming: Vec<u8>,
    in_pos: usize,
    /// TLS bytes to write: `out[out_pos..out_end]` (`out` is initialised
    /// to its length, so rustls can write into it); pooled once written.
    out: Vec<u8>,
    out_pos: usize,
    out_end: usize,
    /// Decrypted bytes the reader has not taken yet (more than its buffer
    /// held, or records that came in while writing).
    plain: BytesMut,
    /// The client sent close_notify: no more data will come.
    peer_closed: bool,
    /// The socket reached EOF.
    eof: bool,
    close_queued: bool,
    /// The TLS failure, once there was one: its alert goes out first,
    /// then every read and write returns it.
    failed: Option<rustls::Error>,
}

/// What processing the buffered TLS bytes came to.
enum Next {
    /// Processed something; process again.
    Again,
    /// Nothing more to process: the handshake is done (application data
    /// may be sent) and all buffered records were taken.
    Idle,
    /// The handshake needs more bytes from the client.
    Blocked,
    Failed(rustls::Error),
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Room for `len` more bytes after `end` in `out`, for rustls to fill
/// (zeroed only where `out` was never initialised).
fn room(out: &mut Vec<u8>, end: usize, len: usize) -> &mut [u8] {
    if out.is_empty() {
        *out = take_buffer(&WRITE_POOL);
    }
    if out.len() < end + len {
        out.resize(end + len, 0);
    }
    &mut out[end..end + len]
}

impl<IO> TlsStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// The rustls connection: ALPN, version and client certificates.
    pub fn connection(&self) -> &UnbufferedServerConnection {
        &self.conn
    }

    /// Processes buffered TLS bytes once: decrypted data goes to `read`
    /// while it has room, then to `self.plain`; handshake messages, alerts
    /// and key updates rustls has to send go to the write buffer; and once
    /// application data may be sent, `write` is encrypted after them
    /// (`*wrote` says how much of it).
    fn process(
        &mut self,
        mut read: Option<&mut ReadBuf<'_>>,
        write: &[u8],
        wrote: &mut usize,
    ) -> Next {
        let UnbufferedStatus { mut discard, state } = self
            .conn
            .process_tls_records(&mut self.incoming[self.in_pos..]);
        let next = match state {
            Err(e) => Next::Failed(e),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut failed = None;
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(AppDataRecord {
                            discard: more,
                            payload,
                        }) => {
                            discard += more;
                            let mut payload = payload;
                            if let Some(buf) = read.as_deref_mut() {
                                let n = payload.len().min(buf.remaining());
                                buf.put_slice(&payload[..n]);
                                payload = &payload[n..];
                            }
                            self.plain.extend_from_slice(payload);
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                failed.map_or(Next::Again, Next::Failed)
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                let mut len = 512;
                loop {
                    let end = self.out_end;
                    match encode.encode(room(&mut self.out, end, len)) {
                        Ok(n) => {
                            self.out_end += n;
                            break Next::Again;
                        }
                        Err(EncodeError::InsufficientSize(s)) => len = s.required_size,
                        Err(EncodeError::AlreadyEncoded) => break Next::Again,
                    }
                }
            }
            // The write buffer goes out in order before anything written
            // after it, so it counts as transmitted.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                Next::Again
            }
            Ok(ConnectionState::PeerClosed) => {
                self.peer_closed = true;
                Next::Again
            }
            Ok(ConnectionState::Closed) => {
                self.peer_closed = true;
                Next::Idle
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                if write.is_empty() {
                    Next::Idle
                } else {
                    // Per record: 5 bytes of header, the content type and
                    // a 16-byte tag.
                    let mut len = write.len() + (write.len() / 16384 + 1) * 22;
                    loop {
                        let end = self.out_end;
                        match traffic.encrypt(write, room(&mut self.out, end, len)) {
                            Ok(n) => {
                                self.out_end += n;
                                *wrote = write.len();
                                break Next::Idle;
                            }
                            Err(EncryptError::InsufficientSize(s)) => len = s.required_size,
                            Err(e) => {
                                break Next::Failed(rustls::Error::General(e.to_string()));
                            }
                        }
                    }
                }
            }
            Ok(ConnectionState::BlockedHandshake) => Next::Blocked,
            // Early data is not enabled on torii's listeners.
            Ok(_) => Next::Failed(rustls::Error::General("unexpected TLS early data".into())),
        };
        self.consume(discard);
        next
    }

    /// Drops `n` processed bytes from the front of the read buffer.
    fn consume(&mut self, n: usize) {
        self.in_pos += n;
        if self.in_pos == self.incoming.len() {
            self.incoming.clear();
            self.in_pos = 0;
        }
    }

    /// Processes until rustls has nothing more to do with what was read
    /// (and `write` is encrypted, when application data may be sent).
    fn process_all(
        &mut self,
        mut read: Option<&mut ReadBuf<'_>>,
        write: &[u8],
        wrote: &mut usize,
    ) -> Result<Next, rustls::Error> {
        loop {
            match self.process(read.as_deref_mut(), write, wrote) {
                Next::Again => continue,
                Next::Failed(e) => return Err(e),
                other => return Ok(other),
            }
        }
    }

    /// After a TLS failure: the alert rustls queued goes to the write
    /// buffer. rustls hands out what it has to send before it looks at
    /// the bytes read, so while it has something to send, asking it again
    /// does not process (and fail on) them a second time; once it has
    /// nothing, it is not asked again. (The bytes stay: rustls may hold
    /// ranges into them.)
    fn queue_alert(&mut self) {
        for _ in 0..16 {
            if !self.conn.wants_write() {
                break;
            }
            if let Next::Failed(_) = self.process(None, &[], &mut 0) {
                break;
            }
        }
    }

    /// Fails with `e`, after writing the alert for it as far as the socket
    /// takes it now and later. Nothing is processed after a failure.
    fn poll_fail(&mut self, cx: &mut Context<'_>, e: rustls::Error) -> Poll<io::Error> {
        if self.failed.is_none() {
            self.queue_alert();
            self.failed = Some(e);
        }
        match self.poll_write_out(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(invalid(self.failed.clone().expect("set above"))),
        }
    }

    /// Reads more TLS bytes from the socket. Ok(0): EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() - self.in_pos >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a TLS message larger than torii accepts",
            )));
        }
        if self.incoming.capacity() == 0 {
            self.incoming = take_buffer(&READ_POOL);
            self.incoming.clear();
        }
        if self.incoming.capacity() - self.incoming.len() < 1024 {
            if self.in_pos > 0 {
                // A partial record: to the front, for room behind it.
                self.incoming.drain(..self.in_pos);
                self.in_pos = 0;
            }
            self.incoming.reserve(READ_SIZE);
        }
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.incoming
        ))?;
        if n == 0 {
            self.eof = true;
        }
        Poll::Ready(Ok(n))
    }

    /// Writes the write buffer out; Ready once it is empty (and pooled).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out_end {
            let n = ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..self.out_end])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out_pos = 0;
        self.out_end = 0;
        give_buffer(&WRITE_POOL, &mut self.out);
        Poll::Ready(Ok(()))
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.failed.clone() {
            return self.poll_fail(cx, e).map(Err);
        }
        loop {
            match self.process_all(None, &[], &mut 0) {
                Err(e) => return self.poll_fail(cx, e).map(Err),
                Ok(Next::Blocked) => {
                    // Our flight first: the client answers it.
                    ready!(self.poll_write_out(cx))?;
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "tls handshake eof",
                        )));
                    }
                }
                Ok(_) => {
                    // Done (session tickets may still be in the buffer:
                    // the first read or write sends them).
                    if self.peer_closed {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed during the TLS handshake",
                        )));
                    }
                    let _ = self.poll_write_out(cx)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Gives this connection's empty buffers back while it waits.
    fn release_idle(&mut self) {
        if self.incoming.len() == self.in_pos {
            self.in_pos = 0;
            give_buffer(&READ_POOL, &mut self.incoming);
        }
        if self.plain.is_empty() && self.plain.capacity() > 0 {
            self.plain = BytesMut::new();
        }
    }
}

impl<IO> AsyncRead for TlsStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.clone() {
            return this.poll_fail(cx, e).map(Err);
        }
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let processed = this.process_all(Some(buf), &[], &mut 0);
            // Whatever rustls queued to send (a key update, tickets) goes
            // out now if the socket takes it, else with the next write.
            if this.out_end > this.out_pos {
                if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            if let Err(e) = processed {
                return this.poll_fail(cx, e).map(Err);
            }
            if buf.filled().len() > before || this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // EOF without close_notify (what rustls's reader says too).
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
            match this.poll_fill(cx) {
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    this.release_idle();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<IO> AsyncWrite for TlsStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.clone() {
            return this.poll_fail(cx, e).map(Err);
        }
        if this.out_end - this.out_pos >= WRITE_HIGH_WATER {
            ready!(this.poll_write_out(cx))?;
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        let mut wrote = 0;
        // Records that came in meanwhile are kept for the reader; what
        // rustls must send goes ahead of this data.
        match this.process_all(None, data, &mut wrote) {
            Err(e) => return this.poll_fail(cx, e).map(Err),
            Ok(_) if wrote == 0 => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the TLS connection is closed for writing",
                )))
            }
            Ok(_) => {}
        }
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(wrote))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // After a failure the alert was the last word.
        if !this.close_queued && this.failed.is_none() {
            this.close_queued = true;
            let _ = this.process_all(None, &[], &mut 0);
            let UnbufferedStatus { discard, state } = this
                .conn
                .process_tls_records(&mut this.incoming[this.in_pos..]);
            if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
                let end = this.out_end;
                if let Ok(n) = traffic.queue_close_notify(room(&mut this.out, end, 64)) {
                    this.out_end += n;
                }
            }
            this.consume(discard);
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::certs::{client_config, server_config, TestPki};
    use rustls::pki_types::ServerName;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_rustls::TlsConnector;

    struct Pair {
        acceptor: TlsAcceptor,
        connector: TlsConnector,
    }

    fn pair(server_alpn: &[&str], client_alpn: &[&str]) -> Pair {
        let pki = TestPki::new("tls-stream-test");
        let mut server = server_config(&pki.server_cert(&["localhost"]), None).unwrap();
        server.alpn_protocols = server_alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let client = client_config(pki.ca_cert_pem(), None, client_alpn).unwrap();
        Pair {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        }
    }

    /// A transport that passes at most `max` bytes per read and write, so
    /// records arrive split at every place.
    struct Trickle {
        io: DuplexStream,
        max: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let max = self.max.min(buf.remaining());
            let mut small = ReadBuf::new(&mut buf.initialize_unfilled()[..max]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut small))?;
            let n = small.filled().len();
            buf.advance(n);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let max = self.max.min(data.len());
            Pin::new(&mut self.io).poll_write(cx, &data[..max])
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// Echoes what it reads until EOF, then closes (close_notify).
    async fn echo<IO: AsyncRead + AsyncWrite + Unpin>(mut s: TlsStream<IO>) -> io::Result<()> {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await?;
        }
        s.shutdown().await
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_large_exchange_over_a_trickling_transport_arrives_whole() {
        let p = pair(&["h2"], &["h2"]);
        let (c, s) = duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let s = p.acceptor.accept(Trickle { io: s, max: 7 }).await?;
            assert_eq!(s.connection().alpn_protocol(), Some(&b"h2"[..]));
            echo(s).await
        });
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = p.connector.connect(name, c).await.unwrap();
        let sent = data(300 * 1024);
        let (mut r, mut w) = tokio::io::split(&mut client);
        let writer = async {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let reader = r.read_to_end(&mut got);
        let ((), read) = tokio::join!(writer, reader);
        read.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the echo differs from what was sent");
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_client_key_update_is_answered_and_traffic_goes_on() {
        let p = pair(&[], &[]);
        let (c, s) = duplex(64 * 1024);
        let server = tokio::spawn(async move { echo(p.acceptor.accept(s).await?).await });
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = p.connector.connect(name, c).await.unwrap();
        for round in 0..3 {
            // Asks the server to update its keys too.
            client.get_mut().1.refresh_traffic_keys().unwrap();
            let msg = data(20_000 + round);
            client.write_all(&msg).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            client.read_exact(&mut back).await.unwrap();
            assert!(back == msg, "round {round}: the echo differs");
        }
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_handshake_failure_sends_the_client_an_alert() {
        let p = pair(&["h2"], &["not-h2"]);
        let (c, s) = duplex(64 * 1024);
        let server = tokio::spawn(async move { p.acceptor.accept(s).await.map(|_| ()) });
        let name = ServerName::try_from("localhost").unwrap();
        let client_err = p
            .connector
            .connect(name, c)
            .await
            .map(|_| ())
            .expect_err("must fail");
        let server_err = server.await.unwrap().expect_err("must fail");
        let (reason, _) = crate::listener::tls::classify(&server_err);
        assert_eq!(reason, "no_common_alpn");
        assert!(
            client_err.to_string().contains("NoApplicationProtocol"),
            "the client should learn why: {client_err}"
        );
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffers() {
        let p = pair(&["h2"], &["h2"]);
        let (c, s) = duplex(64 * 1024);
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(p.acceptor.accept(s), p.connector.connect(name, c));
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        let msg = data(40_000);
        client.write_all(&msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        server.read_exact(&mut got).await.unwrap();
        server.write_all(&got).await.unwrap();
        server.flush().await.unwrap();
        let mut back = vec![0u8; msg.len()];
        client.read_exact(&mut back).await.unwrap();
        assert!(back == msg);
        // The server waits for more: nothing is held for it meanwhile.
        let mut one = [0u8; 1];
        use futures_util::FutureExt;
        assert!(
            server.read(&mut one).now_or_never().is_none(),
            "nothing was sent, so the read waits"
        );
        assert_eq!(server.incoming.capacity(), 0);
        assert_eq!(server.out.capacity(), 0);
        assert_eq!(server.plain.capacity(), 0);
    }

    #[tokio::test]
    async fn eof_without_close_notify_is_an_error_and_close_notify_is_eof() {
        let p = pair(&[], &[]);
        let name = ServerName::try_from("localhost").unwrap();
        let (c, s) = duplex(64 * 1024);
        let (server, client) =
            tokio::join!(p.acceptor.accept(s), p.connector.connect(name.clone(), c));
        let (mut server, client) = (server.unwrap(), client.unwrap());
        // The transport goes away under the client.
        drop(client.into_inner().0);
        let mut buf = [0u8; 16];
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let (c, s) = duplex(64 * 1024);
        let (server, client) = tokio::join!(p.acceptor.accept(s), p.connector.connect(name, c));
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        client.shutdown().await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn garbage_after_the_handshake_fails_the_read_and_alerts_the_client() {
        let p = pair(&[], &[]);
        let name = ServerName::try_from("localhost").unwrap();
        let (c, s) = duplex(64 * 1024);
        let (server, client) = tokio::join!(p.acceptor.accept(s), p.connector.connect(name, c));
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        // An application-data record whose ciphertext is not ours.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x40];
        record.extend_from_slice(&[0x5a; 0x40]);
        client.get_mut().0.write_all(&record).await.unwrap();
        let mut buf = [0u8; 64];
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(
            err.get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>()),
            Some(rustls::Error::DecryptError)
        ));
        // The same error again, not a hang or a panic.
        assert!(server.read(&mut buf).await.is_err());
        let seen = client.read(&mut buf).await.unwrap_err();
        assert!(
            seen.to_string().contains("BadRecordMac"),
            "the client should get the alert: {seen}"
        );
    }
}
