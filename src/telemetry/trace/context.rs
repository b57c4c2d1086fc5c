//! W3C Trace Context (the `traceparent` header): parsing, formatting and
//! the sampling decision. Pure code, no I/O.
//!
//! `traceparent` is `VERSION-TRACEID-PARENTID-FLAGS` in lowercase hex
//! (2, 32, 16 and 2 digits). Version `00` is exactly 55 characters; a
//! later version may append fields after a `-`, and is read as far as
//! version `00` goes (the specification's rule for versions a reader does
//! not know); version `ff` is invalid. All-zero ids are invalid.

/// A trace id: 16 bytes, never all zero.
pub type TraceId = [u8; 16];
/// A span id: 8 bytes, never all zero.
pub type SpanId = [u8; 8];

/// The `sampled` bit of the trace flags.
pub const SAMPLED: u8 = 0x01;

/// The length of a version-00 `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

/// A parsed `traceparent`: the caller's trace and its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: u8,
}

impl Parent {
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// Parses a `traceparent` value; None when it is not valid.
pub fn parse(value: &[u8]) -> Option<Parent> {
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = hex_byte(value[0], value[1])?;
    if version == 0xff || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    if version == 0 && value.len() != TRACEPARENT_LEN {
        return None;
    }
    // A later version: more fields may follow, after a dash.
    if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    hex_into(&value[3..35], &mut trace_id)?;
    let mut span_id = [0u8; 8];
    hex_into(&value[36..52], &mut span_id)?;
    let flags = hex_byte(value[53], value[54])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    // Version 00 defines only the sampled bit; a later version's other
    // bits are not ours to pass on.
    let flags = if version == 0 { flags } else { flags & SAMPLED };
    Some(Parent {
        trace_id,
        span_id,
        flags,
    })
}

/// `00-TRACEID-SPANID-FLAGS`.
pub fn format(trace_id: &TraceId, span_id: &SpanId, flags: u8) -> [u8; TRACEPARENT_LEN] {
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[0] = b'0';
    out[1] = b'0';
    hex_out(trace_id, &mut out[3..35]);
    hex_out(span_id, &mut out[36..52]);
    hex_out(&[flags], &mut out[53..55]);
    out
}

/// Lowercase hex of `bytes` into `out` (twice as long).
pub fn hex_out(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// A trace id as 32 lowercase hex digits (the access log's `trace_id`).
pub fn trace_id_hex(id: &TraceId) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex_out(id, &mut out);
    out
}

fn hex_digit(c: u8) -> Option<u8> {
    // Lowercase only: the specification refuses uppercase.
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some(hex_digit(hi)? << 4 | hex_digit(lo)?)
}

fn hex_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, o) in out.iter_mut().enumerate() {
        *o = hex_byte(text[2 * i], text[2 * i + 1])?;
    }
    Some(())
}

/// The ratio sampler for requests without a parent: a new trace is
/// sampled when its id's low 63 bits fall under `ratio` of their range,
/// as OpenTelemetry's `TraceIdRatioBased` decides (so the decision is a
/// property of the id).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// Sampled when the id's low 63 bits are below this.
    threshold: u64,
    always: bool,
}

impl Ratio {
    /// `ratio` in 0..=1 (checked by the configuration).
    pub fn new(ratio: f64) -> Self {
        let ratio = ratio.clamp(0.0, 1.0);
        Ratio {
            threshold: (ratio * (1u64 << 63) as f64) as u64,
            always: ratio >= 1.0,
        }
    }

    /// Never samples: a request without a sampled parent costs nothing.
    pub fn never(&self) -> bool {
        !self.always && self.threshold == 0
    }

    pub fn samples(&self, trace_id: &TraceId) -> bool {
        if self.always {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        (u64::from_be_bytes(low) & (u64::MAX >> 1)) < self.threshold
    }
}

/// What torii does with a request's trace (parent-based sampling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Record spans, as a child of `parent` (None: a new trace).
    Record {
        trace_id: TraceId,
        parent: Option<SpanId>,
    },
    /// The caller's trace is not sampled: record nothing, pass its
    /// `traceparent` on untouched (the access log still names the trace).
    PassOn { trace_id: TraceId },
    /// No trace: nothing recorded, nothing added.
    None,
}

/// Parent-based sampling: a valid parent's `sampled` flag decides (a
/// sampled parent is always recorded, an unsampled one never); without a
/// valid parent a new trace is started when `ratio` samples its id.
/// `new_id` is asked for a trace id only when one is needed.
pub fn decide(parent: Option<Parent>, ratio: &Ratio, new_id: impl FnOnce() -> TraceId) -> Decision {
    match parent {
        Some(p) if p.sampled() => Decision::Record {
            trace_id: p.trace_id,
            parent: Some(p.span_id),
        },
        Some(p) => Decision::PassOn {
            trace_id: p.trace_id,
        },
        None if ratio.never() => Decision::None,
        None => {
            let trace_id = new_id();
            if ratio.samples(&trace_id) {
                Decision::Record {
                    trace_id,
                    parent: None,
                }
            } else {
                Decision::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specifications_example() {
        let p = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(
            p.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(p.sampled());
        assert_eq!(
            &format(&p.trace_id, &p.span_id, p.flags)[..],
            GOOD.as_bytes()
        );
        let unsampled = GOOD.replace("-01", "-00");
        assert!(!parse(unsampled.as_bytes()).unwrap().sampled());
    }

    #[test]
    fn refuses_what_the_specification_refuses() {
        let bad = [
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version 00 with more after it
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // short, wrong separators, not hex
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
            "",
        ];
        for b in bad {
            assert_eq!(parse(b.as_bytes()), None, "{b}");
        }
    }

    #[test]
    fn a_later_version_is_read_as_far_as_version_00_goes() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-comes";
        let p = parse(v.as_bytes()).unwrap();
        assert!(p.sampled());
        assert_eq!(p.flags, SAMPLED, "unknown flag bits are not passed on");
        let exact = &v[..TRACEPARENT_LEN];
        assert!(parse(exact.as_bytes()).is_some());
        // More characters, but not after a dash.
        let glued = format!("{exact}x");
        assert_eq!(parse(glued.as_bytes()), None);
    }

    #[test]
    fn sampling_honours_the_parent_and_the_ratio() {
        let p = parse(GOOD.as_bytes()).unwrap();
        let never = Ratio::new(0.0);
        let always = Ratio::new(1.0);
        let no_id = || -> TraceId { panic!("no new id needed") };
        // A sampled parent is recorded, whatever the ratio.
        assert_eq!(
            decide(Some(p), &never, no_id),
            Decision::Record {
                trace_id: p.trace_id,
                parent: Some(p.span_id)
            }
        );
        // An unsampled parent is never sampled again.
        let u = Parent { flags: 0, ..p };
        assert_eq!(
            decide(Some(u), &always, no_id),
            Decision::PassOn {
                trace_id: p.trace_id
            }
        );
        // No parent: the ratio decides, without an id at 0.
        assert_eq!(decide(None, &never, no_id), Decision::None);
        let id = [7u8; 16];
        assert_eq!(
            decide(None, &always, || id),
            Decision::Record {
                trace_id: id,
                parent: None
            }
        );
    }

    #[test]
    fn the_ratio_samples_its_share_of_ids() {
        let half = Ratio::new(0.5);
        let tenth = Ratio::new(0.1);
        let (mut h, mut t) = (0, 0);
        let n = 20_000;
        for _ in 0..n {
            let id: TraceId = rand::random();
            h += usize::from(half.samples(&id));
            t += usize::from(tenth.samples(&id));
        }
        assert!((9_000..11_000).contains(&h), "{h}");
        assert!((1_500..2_500).contains(&t), "{t}");
        assert!(Ratio::new(0.0).never() && !Ratio::new(0.0001).never());
    }
}
