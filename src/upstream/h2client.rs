//! torii's HTTP/2 client connection to an upstream, on torii's own
//! HTTP/2 implementation ([`crate::http2`]).
//!
//! The request's own task opens the stream and encodes its head straight
//! into the connection's write buffer, sends the body when it is already
//! there — a unary gRPC request's is, by the time its handler runs — and
//! waits for the response head. Only a body still streaming in gets a task
//! of its own to pipe it. One task per connection reads and writes.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::{ready, Poll};

use http::{Request, Response};
use http_body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::body::h2::{H2Received, KeptBody, Pipe, Recorded};
use crate::body::{Body, Received};
use crate::http2::client::{self, Client, Config};
use crate::http2::{Error, Reason};

/// Settings of an upstream HTTP/2 connection.
pub struct Settings {
    pub stream_window: u32,
    pub connection_window: u32,
    pub keepalive: crate::config::Keepalive,
}

/// The largest response header list taken from an upstream.
const MAX_RESPONSE_HEADERS: u32 = 256 * 1024;

/// A handle on one upstream HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct H2Client {
    client: Client,
}

/// Where the end of a connection that ended badly is told.
pub struct Ended {
    pub cluster: String,
    pub failures: std::sync::Arc<super::failures::FailureLog>,
    /// The connection's place under the cluster's `max_connections`.
    pub slot: Option<super::limits::ConnSlot>,
}

/// Starts the HTTP/2 connection on `io` (torii's preface and SETTINGS are
/// queued at once; requests may follow) and the task that drives it.
pub async fn handshake<T>(
    io: T,
    settings: &Settings,
    addr: SocketAddr,
    ended: Ended,
) -> Result<H2Client, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = Config {
        max_concurrent_streams: 0,
        max_header_list_size: MAX_RESPONSE_HEADERS,
        stream_window: settings.stream_window,
        connection_window: settings.connection_window,
        keepalive_interval: settings.keepalive.interval,
        keepalive_timeout: settings.keepalive.timeout,
        keepalive_while_idle: settings.keepalive.while_idle,
        // The upstream's SETTINGS must arrive within a keepalive timeout.
        handshake_timeout: settings.keepalive.timeout,
    };
    let (client, conn) = client::handshake(io, config);
    tokio::spawn(async move {
        // A connection that simply closed when no longer needed says
        // nothing; one that failed (a GOAWAY from the upstream, a protocol
        // error, an unanswered PING, a broken socket) is told at info.
        if let Some(why) = conn.drive().await {
            let cluster = &ended.cluster;
            ended.failures.note(
                cluster,
                addr,
                "connection",
                &format!(
                    "the HTTP/2 connection to upstream {addr} (cluster {cluster}) ended: {why}"
                ),
            );
        }
        // The connection's place under max_connections is kept until here.
        drop(ended.slot);
    });
    Ok(H2Client { client })
}

impl H2Client {
    /// True once the connection has ended (or failed, or the upstream sent
    /// GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The upstream's limit on concurrent streams on this connection.
    pub fn peer_max_streams(&self) -> u32 {
        self.client.peer_max_streams()
    }

    /// Waits until the connection may open one more stream. An error means
    /// the connection is gone (closed, failed, or the upstream sent GOAWAY):
    /// nothing was sent, so the request may go elsewhere.
    pub async fn ready(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.client.poll_ready(cx)).await
    }

    /// Sends `req` (call [`ready`](Self::ready) first) and waits for the
    /// response head. The body is sent from here if it is already
    /// complete; otherwise a task pipes it, and stops when the response
    /// body is dropped. A request the upstream certainly did not process
    /// comes back in the error, to be sent again, when all of it can be:
    /// its head, and its body unless more than `RECORD_LIMIT` of it had
    /// gone out (what went out, then the rest of the original).
    ///
    /// With `keep` (a retry policy's request), the request is kept
    /// whatever happens: it comes back in any error, and the response
    /// body holds it ([`H2Received::take_request`]) until the policy lets
    /// it go — nothing is copied to keep it.
    pub async fn send(
        &mut self,
        req: Box<Request<Body>>,
        keep: bool,
    ) -> Result<Response<Received>, SendError> {
        let (parts, body) = (*req).into_parts();
        let eos = body.is_end_stream();
        let opened = if keep {
            self.client.send_request_keeping_head(parts, eos)
        } else {
            self.client.send_request(parts, eos)
        };
        let (mut response, send) = match opened {
            Ok(r) => r,
            Err((error, parts)) => {
                return Err(SendError {
                    error,
                    unprocessed: true,
                    request: Some(Box::new(Request::from_parts(parts, body))),
                })
            }
        };
        let mut cancel = None;
        // What was taken from the body, refcounted, to send the request
        // again if the upstream refuses the stream unprocessed. A body
        // still streaming in is recorded by its pipe's task until the
        // response head arrives (the receiver is dropped) or the record
        // outgrows RECORD_LIMIT; the task hands the record back, with the
        // rest of the body, when the pipe ends before.
        let mut record = Recorded::empty();
        let mut streaming = None;
        if let Some(send) = send {
            record = Recorded::default();
            let mut pipe = Pipe::new(body, send, Reason::CANCEL, "upstream");
            // Most request bodies are complete already: no task for those.
            if poll_fn(|cx| Poll::Ready(pipe.poll_pipe_recording(cx, &mut record)))
                .await
                .is_pending()
            {
                cancel = Some(pipe.cancel_on_drop());
                let (tx, rx) = oneshot::channel();
                streaming = Some(rx);
                let mut keep = Some((tx, std::mem::take(&mut record)));
                tokio::spawn(poll_fn(move |cx| {
                    // Answered (the receiver is gone), or too much to keep:
                    // nothing will be sent again.
                    if keep
                        .as_ref()
                        .is_some_and(|(tx, r)| tx.is_closed() || r.is_given_up())
                    {
                        keep = None;
                    }
                    match &mut keep {
                        Some((_, r)) => ready!(pipe.poll_pipe_recording(cx, r)),
                        None => ready!(pipe.poll_pipe(cx)),
                    }
                    if let Some((tx, r)) = keep.take() {
                        if !r.is_given_up() {
                            let _ = tx.send((r, pipe.take_body()));
                        }
                    }
                    Poll::Ready(())
                }));
            }
        }
        match (&mut response).await {
            Ok(r) if keep => {
                let kept = match streaming {
                    Some(rx) => KeptBody::Streaming(rx),
                    None => KeptBody::Whole(record),
                };
                Ok(r.map(|recv| Received::H2(H2Received::keeping(recv, cancel, kept))))
            }
            Ok(r) => Ok(r.map(|recv| Received::H2(H2Received::new(recv, cancel)))),
            Err(error) => {
                let head = match response.take_unprocessed() {
                    Some(head) => Some((head, true)),
                    None if keep => response.take_head().map(|head| (head, false)),
                    None => None,
                };
                let Some((head, unprocessed)) = head else {
                    return Err(SendError {
                        error,
                        unprocessed: false,
                        request: None,
                    });
                };
                // The stream is over, so its pipe ends (and hands back its
                // record) at once.
                let body = match streaming {
                    None => record.into_body(None),
                    Some(rx) => match rx.await {
                        Ok((record, rest)) => record.into_body(Some(rest)),
                        Err(_) => None,
                    },
                };
                drop(cancel);
                Err(SendError {
                    error,
                    unprocessed,
                    request: body.map(|body| Box::new(Request::from_parts(*head, body))),
                })
            }
        }
    }
}

/// A request that failed on an upstream HTTP/2 connection.
pub struct SendError {
    pub error: Error,
    /// The upstream certainly did not process the request (it refused the
    /// stream, or the stream was above its GOAWAY's last stream id, or
    /// never left torii): it may be sent again, whatever its method.
    pub unprocessed: bool,
    /// The request, whole, when it is unprocessed or was sent keeping it
    /// (a retry policy's), and all of its body can be sent again.
    pub request: Option<Box<Request<Body>>>,
}
