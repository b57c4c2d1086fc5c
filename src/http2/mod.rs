//! torii's own HTTP/2 (RFC 9113), for the connections it serves to clients.
//!
//! Why not the h2 crate: callgrind showed h2 (both sides of the proxy)
//! spending about half of all instructions of a proxied unary gRPC call —
//! frame structs copied through internal queues, HPACK with Huffman on
//! every string, a stream store behind several indirections — and holding
//! 28 KiB of buffers for every idle connection. This implementation keeps
//! what a proxy needs and no more: frames are parsed where they lie in the
//! read buffer, header blocks are encoded straight into the write buffer,
//! and an idle connection holds no buffers at all.
//!
//! Layout: [`frame`] (frame layout; reading and writing frames),
//! [`hpack`] (header compression), [`fields`] (header blocks ↔ requests
//! and responses, with RFC 9113 §8 checks), `conn` (the connection —
//! streams, flow control, settings, defences — split by RFC area: its
//! module doc has the table), [`server`] (the client-facing side),
//! [`client`] (torii's side towards an upstream).

mod chunk;
pub mod client;
mod conn;
pub mod fields;
pub mod frame;
pub mod hpack;
pub mod maps;
pub mod server;

use std::fmt;
use std::sync::Arc;

pub use conn::{Peek, RecvBody, SendBody};

/// An HTTP/2 error code (RFC 9113 §7).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);

    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        NAMES.get(self.0 as usize).copied()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "unknown error code {:#x}", self.0),
        }
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a stream, or its connection, could not go on.
#[derive(Clone, Debug)]
pub enum Error {
    /// The peer reset the stream (RST_STREAM).
    Reset(Reason),
    /// torii reset the stream: the peer broke a rule on it.
    LocalReset(Reason),
    /// torii reset the stream because its own side gave up on it (the
    /// exchange was cancelled, or the body it was sending broke off): no
    /// fault of the peer's.
    Cancelled(Reason),
    /// The connection ended with GOAWAY (sent by the peer when `remote`).
    GoAway { reason: Reason, remote: bool },
    /// The connection failed: a read or write error.
    Io(Arc<std::io::Error>),
    /// The connection closed before the stream finished.
    Closed,
}

impl Error {
    /// The HTTP/2 error code, if there was one.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::Reset(r) | Error::LocalReset(r) | Error::Cancelled(r) => Some(*r),
            Error::GoAway { reason, .. } => Some(*reason),
            Error::Io(_) | Error::Closed => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Reset(r) => write!(f, "stream reset by the peer ({r})"),
            Error::LocalReset(r) => write!(f, "stream reset by torii ({r})"),
            Error::Cancelled(r) => write!(f, "stream cancelled by torii ({r})"),
            Error::GoAway {
                reason,
                remote: true,
            } => {
                write!(f, "connection closed by the peer with GOAWAY ({reason})")
            }
            Error::GoAway {
                reason,
                remote: false,
            } => {
                write!(f, "connection closed by torii with GOAWAY ({reason})")
            }
            Error::Io(e) => write!(f, "connection failed: {e}"),
            Error::Closed => f.write_str("connection closed before the stream finished"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(&**e),
            _ => None,
        }
    }
}
