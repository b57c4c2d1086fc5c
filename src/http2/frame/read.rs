//! Reading frames: whole frames split off the bytes read (an incomplete
//! one kept between reads), and each type's payload read where it lies,
//! with the checks RFC 9113 §6 makes of its layout. What a frame means
//! for the connection is left to `conn`.

use super::{flag, Head, DEFAULT_MAX_FRAME, HEADER_LEN};
use crate::http2::Reason;

/// Strips the padding of a DATA or HEADERS payload (RFC 9113 §6.1).
/// `None` when the pad length is not less than the payload.
pub fn unpad(head: &Head, payload: &[u8]) -> Option<(usize, usize)> {
    if !head.has(flag::PADDED) {
        return Some((0, payload.len()));
    }
    let pad = *payload.first()? as usize;
    if pad >= payload.len() {
        return None;
    }
    Some((1, payload.len() - pad))
}

/// Why a frame cannot be read: the error code for it and what was wrong.
/// A connection error (RFC 9113 §5.4.1) unless the reader says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub reason: Reason,
    pub what: &'static str,
}

fn invalid<T>(reason: Reason, what: &'static str) -> Result<T, Invalid> {
    Err(Invalid { reason, what })
}

/// Splits the first whole frame off `data`: `Ok(None)` when `data` ends
/// before it does, `Err` with its header when the header announces more
/// than torii accepts (the header alone decides: the payload is not
/// waited for).
#[inline]
pub fn next<'a>(data: &mut &'a [u8]) -> Result<Option<(Head, &'a [u8])>, Head> {
    if data.len() < HEADER_LEN {
        return Ok(None);
    }
    let head = Head::parse(data);
    if head.len > DEFAULT_MAX_FRAME {
        return Err(head);
    }
    let total = HEADER_LEN + head.len as usize;
    if data.len() < total {
        return Ok(None);
    }
    let payload = &data[HEADER_LEN..total];
    *data = &data[total..];
    Ok(Some((head, payload)))
}

/// A frame that arrived in more than one read, kept (copied: the read
/// buffer is the thread's) until the rest arrives.
#[derive(Default)]
pub struct Partial(Vec<u8>);

impl Partial {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps the start of a frame that `data` ends in.
    pub fn keep(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
    }

    /// Moves what the kept frame still lacks from the front of `data`:
    /// the whole frame (header included) once it is complete, `Ok(None)`
    /// while it is not, `Err` as [`next`] when its header announces too
    /// much.
    pub fn complete(&mut self, data: &mut &[u8]) -> Result<Option<Vec<u8>>, Head> {
        let need = HEADER_LEN.saturating_sub(self.0.len());
        let take = need.min(data.len());
        self.0.extend_from_slice(&data[..take]);
        *data = &data[take..];
        if self.0.len() < HEADER_LEN {
            return Ok(None);
        }
        let head = Head::parse(&self.0);
        if head.len > DEFAULT_MAX_FRAME {
            return Err(head);
        }
        let total = HEADER_LEN + head.len as usize;
        let take = (total - self.0.len()).min(data.len());
        self.0.extend_from_slice(&data[..take]);
        *data = &data[take..];
        if self.0.len() < total {
            return Ok(None);
        }
        Ok(Some(std::mem::take(&mut self.0)))
    }
}

/// DATA (§6.1): the data, without padding.
#[inline]
pub fn data<'a>(head: &Head, payload: &'a [u8]) -> Result<&'a [u8], Invalid> {
    if head.stream == 0 {
        return invalid(Reason::PROTOCOL_ERROR, "DATA on stream 0");
    }
    match unpad(head, payload) {
        Some((from, to)) => Ok(&payload[from..to]),
        None => invalid(Reason::PROTOCOL_ERROR, "DATA with too much padding"),
    }
}

/// A HEADERS frame's payload (§6.2).
pub struct Headers<'a> {
    /// The header block fragment, without padding and priority.
    pub block: &'a [u8],
    /// The stream the frame makes its stream depend on (PRIORITY flag).
    pub depends_on: Option<u32>,
}

/// HEADERS (§6.2).
#[inline]
pub fn headers<'a>(head: &Head, payload: &'a [u8]) -> Result<Headers<'a>, Invalid> {
    if head.stream == 0 {
        return invalid(Reason::PROTOCOL_ERROR, "HEADERS on stream 0");
    }
    let Some((mut from, to)) = unpad(head, payload) else {
        return invalid(Reason::PROTOCOL_ERROR, "HEADERS with too much padding");
    };
    let mut depends_on = None;
    if head.has(flag::PRIORITY) {
        from += 5;
        if from > to {
            return invalid(
                Reason::FRAME_SIZE_ERROR,
                "a HEADERS frame too short for its priority",
            );
        }
        depends_on = Some(stream_id(&payload[from - 5..from - 1]));
    }
    Ok(Headers {
        block: &payload[from..to],
        depends_on,
    })
}

/// PRIORITY (§6.3): the stream it makes its stream depend on; `None` when
/// the payload is not 5 bytes (a FRAME_SIZE_ERROR, of the stream unless it
/// is idle). Stream 0 is the caller's to check.
pub fn priority(payload: &[u8]) -> Option<u32> {
    (payload.len() == 5).then(|| stream_id(payload))
}

/// RST_STREAM (§6.4): its error code.
pub fn rst_stream(head: &Head, payload: &[u8]) -> Result<Reason, Invalid> {
    let Ok(b) = <[u8; 4]>::try_from(payload) else {
        return invalid(
            Reason::FRAME_SIZE_ERROR,
            "an RST_STREAM that is not 4 bytes",
        );
    };
    if head.stream == 0 {
        return invalid(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0");
    }
    Ok(Reason(u32::from_be_bytes(b)))
}

/// SETTINGS (§6.5): `None` for an acknowledgement, else the settings in
/// order, as (identifier, value).
pub fn settings<'a>(
    head: &Head,
    payload: &'a [u8],
) -> Result<Option<impl Iterator<Item = (u16, u32)> + 'a>, Invalid> {
    if head.stream != 0 {
        return invalid(Reason::PROTOCOL_ERROR, "SETTINGS on a stream");
    }
    if head.has(flag::ACK) {
        if !payload.is_empty() {
            return invalid(Reason::FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload");
        }
        return Ok(None);
    }
    if !payload.len().is_multiple_of(6) {
        return invalid(Reason::FRAME_SIZE_ERROR, "a SETTINGS frame of a bad length");
    }
    Ok(Some(payload.chunks_exact(6).map(|s| {
        (
            u16::from_be_bytes([s[0], s[1]]),
            u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
        )
    })))
}

/// PING (§6.7): its 8 bytes.
pub fn ping(head: &Head, payload: &[u8]) -> Result<[u8; 8], Invalid> {
    if head.stream != 0 {
        return invalid(Reason::PROTOCOL_ERROR, "PING on a stream");
    }
    match <[u8; 8]>::try_from(payload) {
        Ok(data) => Ok(data),
        Err(_) => invalid(Reason::FRAME_SIZE_ERROR, "a PING that is not 8 bytes"),
    }
}

/// A GOAWAY frame's payload (§6.8).
pub struct GoAway<'a> {
    pub last_stream: u32,
    pub reason: Reason,
    pub debug: &'a [u8],
}

/// GOAWAY (§6.8).
pub fn goaway<'a>(head: &Head, payload: &'a [u8]) -> Result<GoAway<'a>, Invalid> {
    if head.stream != 0 || payload.len() < 8 {
        return invalid(Reason::PROTOCOL_ERROR, "a malformed GOAWAY");
    }
    Ok(GoAway {
        last_stream: stream_id(payload),
        reason: Reason(u32::from_be_bytes([
            payload[4], payload[5], payload[6], payload[7],
        ])),
        debug: &payload[8..],
    })
}

/// WINDOW_UPDATE (§6.9): its increment (0 is the caller's to judge: a
/// connection error on stream 0, a stream error on a stream).
pub fn window_update(payload: &[u8]) -> Result<u32, Invalid> {
    match <[u8; 4]>::try_from(payload) {
        Ok(b) => Ok(u32::from_be_bytes(b) & 0x7fff_ffff),
        Err(_) => invalid(
            Reason::FRAME_SIZE_ERROR,
            "a WINDOW_UPDATE that is not 4 bytes",
        ),
    }
}

/// A 31-bit stream id from the first 4 bytes of `b` (the reserved bit
/// dropped).
fn stream_id(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff
}
