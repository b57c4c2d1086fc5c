//! Limits on what a peer can make torii do (RFC 9113 §10.5 and the known
//! attacks: rapid reset, CONTINUATION floods, empty frames, unread
//! answers): the budgets, and the reset bucket.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::fault::Fault;
use super::{lock, Connection, State};
use crate::http2::Reason;

/// Past this many bytes waiting to be written, streams stop adding DATA
/// and the connection stops reading (a peer that does not read cannot make
/// torii buffer without bound: SETTINGS/PING floods, zero windows).
pub(super) const WRITE_HIGH: usize = 64 * 1024;
/// The most a peer may send of one header block (HEADERS + CONTINUATION),
/// and how many frames it may use for it.
pub(super) const MAX_BLOCK: usize = 256 * 1024;
pub(super) const MAX_CONTINUATIONS: u32 = 256;
/// Streams a client may reset before their response, or make torii reset
/// for broken rules: a burst, refilled at a rate — far more than real
/// cancellations (deadlines, a user leaving), far less than a rapid-reset
/// attack sends. Past it, GOAWAY ENHANCE_YOUR_CALM.
pub(super) const RESET_BURST: u32 = 1000;
pub(super) const RESET_RATE: u32 = 1000;
/// Empty DATA frames (without END_STREAM) a peer may send; real data
/// refills it.
pub(super) const EMPTY_DATA_BUDGET: u32 = 100;
/// A request still arriving after torii answered it in full (an early
/// answer: no route, a refusal, an upstream that did not wait for the
/// body) is read and dropped up to this many bytes before the stream is
/// reset with NO_ERROR. Resetting at once is allowed (RFC 9113 §8.1), but
/// a client still sending its body may then lose the answer (curl 7.88
/// does, about once in 20): a small body already in flight is read instead,
/// as common servers do.
pub(super) const LINGER_BYTES: u32 = 64 * 1024;
/// At most this many such streams per connection; past it, and while the
/// connection drains, they are reset at once.
pub(super) const MAX_LINGERING: u16 = 8;

/// A token bucket for resets.
pub(super) struct Bucket {
    tokens: u32,
    refilled: Instant,
}

impl Bucket {
    pub(super) fn new() -> Bucket {
        Bucket {
            tokens: RESET_BURST,
            refilled: Instant::now(),
        }
    }

    /// Takes a token; false when there is none.
    pub(super) fn take(&mut self) -> bool {
        if self.tokens == 0 {
            let now = Instant::now();
            let earned =
                now.duration_since(self.refilled).as_millis() as u64 * u64::from(RESET_RATE) / 1000;
            if earned > 0 {
                self.tokens = earned.min(u64::from(RESET_BURST)) as u32;
                self.refilled = now;
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        if self.tokens == RESET_BURST - 1 {
            // Refills count from the first token taken out of a full bucket.
            self.refilled = Instant::now();
        }
        true
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// Streams the peer made torii reset use up the same budget as its
    /// own resets (see `Inner::reset_stream`).
    pub(super) fn count_peer_resets(&mut self) -> Result<(), Fault> {
        if self.state == State::Closing {
            return Ok(());
        }
        let n = std::mem::take(&mut lock(&self.shared).peer_resets);
        for _ in 0..n {
            if !self.resets.take() {
                return Err(Fault::connection(
                    Reason::ENHANCE_YOUR_CALM,
                    format!(
                        "more than {RESET_BURST} streams reset, by the client or because it broke rules on them, faster than {RESET_RATE} a second (rapid reset)"
                    ),
                ));
            }
        }
        Ok(())
    }
}
