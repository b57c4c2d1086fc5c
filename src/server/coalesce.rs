//! Write coalescing for HTTP/1.1 client connections (hyper).
//!
//! [`split`] puts a buffer between a connection and its socket. Writes
//! land in the buffer; a flush asked for by the connection is deferred;
//! [`Flusher::run`] writes the buffer out once, after each poll of the task
//! that drives the connection. Everything the connection produced in one
//! poll leaves in one write, and still leaves before the task yields, so no
//! latency is added. Backpressure is kept: past [`LIMIT`] buffered bytes a
//! write waits for the socket. (torii's own HTTP/2 writes one buffer per
//! poll by itself and needs none of this.)

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes buffered before a write has to wait for the socket.
pub const LIMIT: usize = 64 * 1024;
/// Writes at least this large skip the buffer when it is empty (no copy).
const DIRECT: usize = 16 * 1024;

struct State<T> {
    io: T,
    buf: Vec<u8>,
    /// How much of `buf` the socket has taken.
    sent: usize,
    /// A write error seen while flushing on the task's behalf, reported to
    /// the connection on its next write or flush.
    error: Option<io::Error>,
}

impl<T: AsyncWrite + Unpin> State<T> {
    /// Writes the buffer out; Ready(Ok) once it is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        if self.buf.capacity() > 0 {
            // Idle connections hold no write buffer (sidecars hold thousands).
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    fn take_error(&mut self) -> io::Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }
}

/// The connection's side: an `AsyncRead + AsyncWrite` whose writes are
/// buffered until [`Flusher::run`]'s task finishes its poll.
pub struct Coalesced<T> {
    state: Arc<Mutex<State<T>>>,
}

/// The task's side: flushes what the connection buffered.
pub struct Flusher<T> {
    state: Arc<Mutex<State<T>>>,
}

pub fn split<T>(io: T) -> (Coalesced<T>, Flusher<T>) {
    let state = Arc::new(Mutex::new(State {
        io,
        buf: Vec::new(),
        sent: 0,
        error: None,
    }));
    (
        Coalesced {
            state: state.clone(),
        },
        Flusher { state },
    )
}

fn lock<T>(m: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // Nothing in State can be left half-updated by a panic that matters
    // more than the connection itself.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: AsyncWrite + Unpin> Flusher<T> {
    /// Drives `fut`, writing out what it buffered after each of its polls.
    pub fn run<F: Future>(self, fut: F) -> FlushAfter<F, T> {
        FlushAfter {
            fut,
            flusher: self,
            out: None,
        }
    }

    fn poll_flush_buffered(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = lock(&self.state);
        if s.pending() == 0 {
            return Poll::Ready(());
        }
        let res = match s.poll_drain(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) => Pin::new(&mut s.io).poll_flush(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        };
        if let Poll::Ready(Err(e)) = res {
            // The connection learns of it on its next write.
            s.buf = Vec::new();
            s.sent = 0;
            s.error.get_or_insert(e);
        }
        Poll::Ready(())
    }
}

pin_project_lite::pin_project! {
    pub struct FlushAfter<F: Future, T> {
        #[pin]
        fut: F,
        flusher: Flusher<T>,
        out: Option<F::Output>,
    }
}

impl<F: Future, T: AsyncWrite + Unpin> Future for FlushAfter<F, T> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if this.out.is_none() {
            if let Poll::Ready(v) = this.fut.poll(cx) {
                *this.out = Some(v);
            }
        }
        // A socket that cannot take the bytes now wakes this task when it can.
        ready!(this.flusher.poll_flush_buffered(cx));
        match this.out.take() {
            Some(v) => Poll::Ready(v),
            None => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.state).io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Makes room for `len` more bytes; Ready(true) when they should
    /// bypass the buffer (it is empty and they are many).
    fn poll_room(s: &mut State<T>, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        s.take_error()?;
        if s.pending() > 0 && s.pending() + len > LIMIT {
            ready!(s.poll_drain(cx))?;
        }
        Poll::Ready(Ok(s.pending() == 0 && len >= DIRECT))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = lock(&self.state);
        if ready!(Self::poll_room(&mut s, cx, buf.len()))? {
            return Pin::new(&mut s.io).poll_write(cx, buf);
        }
        s.buf.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let mut s = lock(&self.state);
        if ready!(Self::poll_room(&mut s, cx, len))? {
            return Pin::new(&mut s.io).poll_write_vectored(cx, bufs);
        }
        s.buf.reserve(len);
        for b in bufs {
            s.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        // Vectored writes are copied into one buffer, so they are cheap.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Deferred: the task's Flusher writes the buffer out when the
        // connection's poll is over.
        lock(&self.state).take_error().into()
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.state);
        s.take_error()?;
        ready!(s.poll_drain(cx))?;
        Pin::new(&mut s.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_leave_in_one_piece_after_the_poll() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let (mut io, flusher) = split(a);
        let writer = flusher.run(async move {
            for i in 0..10u8 {
                io.write_all(&[i; 300]).await.unwrap();
                io.flush().await.unwrap();
            }
            io
        });
        let mut io = writer.await;
        let mut got = vec![0u8; 3000];
        b.read_exact(&mut got).await.unwrap();
        for (i, chunk) in got.chunks(300).enumerate() {
            assert!(chunk.iter().all(|&x| x == i as u8));
        }
        io.shutdown().await.unwrap();
        assert_eq!(b.read(&mut [0u8; 1]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_full_buffer_waits_for_the_socket() {
        // The socket takes 1 KiB; the writer wants to put LIMIT * 3 through.
        let (a, mut b) = tokio::io::duplex(1024);
        let (mut io, flusher) = split(a);
        let total = LIMIT * 3;
        let writer = tokio::spawn(flusher.run(async move {
            let chunk = vec![7u8; 1000];
            let mut sent = 0;
            while sent < total {
                let n = chunk.len().min(total - sent);
                io.write_all(&chunk[..n]).await.unwrap();
                sent += n;
            }
            io.flush().await.unwrap();
        }));
        let mut got = 0;
        let mut buf = vec![0u8; 8192];
        while got < total {
            let n = b.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n;
        }
        writer.await.unwrap();
        assert_eq!(got, total);
    }
}
