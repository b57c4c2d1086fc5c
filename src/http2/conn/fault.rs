//! What a frame handler reports instead of acting on a protocol error
//! itself (RFC 9113 §5.4): the one driver, `Connection::answer` in
//! recv.rs, turns it into RST_STREAM or GOAWAY.

use crate::http2::frame;
use crate::http2::Reason;

/// What a frame handler found wrong with what the peer sent (RFC 9113
/// §5.4). Handlers return it; [`Connection::answer`] alone turns it into
/// RST_STREAM or GOAWAY. (Refusals and answers that are torii's own choice —
/// REFUSED_STREAM at the stream limit, a 431, a lingering request cut off —
/// are not faults: their handlers write them.)
///
/// Sixteen bytes, so that a handler's `Result<(), Fault>` comes back in
/// registers: the words of a connection error are boxed (an allocation
/// only on the way to GOAWAY).
#[derive(Debug)]
pub(super) enum Fault {
    /// A connection error (§5.4.1): GOAWAY with this code, and the words
    /// (the log's, and the GOAWAY's debug data) on what the peer did.
    Connection(Box<(Reason, String)>),
    /// A stream error (§5.4.2) on a stream torii tracks: RST_STREAM, the
    /// stream fails with [`Error::LocalReset`], and the server side counts
    /// it against the reset budget (see `Inner::reset_stream`). A stream
    /// gone meanwhile (its handles dropped) was reset already.
    Stream(u32, Reason),
    /// A stream error on a stream torii keeps no state for (closed, or one
    /// the peer reset): RST_STREAM alone, counted the same.
    Untracked(u32, Reason),
    /// A frame on a stream that has closed, where torii no longer knows
    /// that it reset the stream itself, or the peer had reset it:
    /// RST_STREAM STREAM_CLOSED, *not* counted against the reset budget.
    /// Nothing was started for it and nothing is cancelled; and a client
    /// whose DATA was still on its way when torii answered or refused its
    /// streams in a burst (more than the record of recent closes holds)
    /// is not an attacker.
    Closed(u32),
    /// A stream error on a stream refused before it opened: as `Untracked`,
    /// and remembered as reset by torii (the peer's frames still in flight
    /// on it are ignored).
    Refused(u32, Reason),
    /// A malformed request head (§8.1.1): RST_STREAM PROTOCOL_ERROR,
    /// remembered as reset by torii; one token of the reset budget, and
    /// past it the connection ends.
    Malformed(u32),
}

const _: () = assert!(std::mem::size_of::<Result<(), Fault>>() == 16);

impl Fault {
    #[cold]
    pub(super) fn connection(reason: Reason, what: String) -> Fault {
        Fault::Connection(Box::new((reason, what)))
    }
}

impl From<frame::Invalid> for Fault {
    #[cold]
    fn from(e: frame::Invalid) -> Fault {
        Fault::connection(e.reason, e.what.into())
    }
}
