//! Frames that steer the connection rather than carry a stream's content:
//! PRIORITY (§6.3), RST_STREAM (§6.4), SETTINGS (§6.5), PING (§6.7),
//! GOAWAY (§6.8) and WINDOW_UPDATE (§6.9).

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::defences::{RESET_BURST, RESET_RATE};
use super::fault::Fault;
use super::shared::{lock, Role};
use super::{Connection, Ping, State};
use crate::http2::frame::{self, flag, setting, Head};
use crate::http2::hpack::Encoder;
use crate::http2::{Error, Reason};

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// PRIORITY (deprecated by RFC 9113, still parsed): only its length and
    /// a stream depending on itself are errors. A stream error is only
    /// ever sent on a stream that exists: an idle one cannot be reset
    /// (§6.4), so a bad PRIORITY there ends the connection.
    // Not on a request's path: kept out of the per-frame dispatch.
    #[inline(never)]
    pub(super) fn on_priority(&mut self, head: Head, payload: &[u8]) -> Result<(), Fault> {
        if head.stream == 0 {
            return Err(Fault::connection(
                Reason::PROTOCOL_ERROR,
                "PRIORITY on stream 0".into(),
            ));
        }
        let reason = match frame::priority(payload) {
            None => Reason::FRAME_SIZE_ERROR,
            Some(dependency) if dependency == head.stream => Reason::PROTOCOL_ERROR,
            Some(_) => return Ok(()),
        };
        let inner = lock(&self.shared);
        if inner.ids.contains_key(&head.stream) {
            return Err(Fault::Stream(head.stream, reason));
        }
        if self.is_idle(head.stream, &inner) {
            let what = if reason == Reason::FRAME_SIZE_ERROR {
                format!("a PRIORITY frame of {} bytes (not 5)", payload.len())
            } else {
                "a PRIORITY frame making a stream depend on itself".to_string()
            };
            return Err(Fault::connection(
                reason,
                format!("{what} on idle stream {}", head.stream),
            ));
        }
        // A closed stream: the stream error needs no state.
        Err(Fault::Untracked(head.stream, reason))
    }

    // Not on a request's path: kept out of the per-frame dispatch.
    #[inline(never)]
    pub(super) fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), Fault> {
        let Some(settings) = frame::settings(&head, payload)? else {
            return Ok(()); // an acknowledgement
        };
        if self.state == State::Settings {
            self.state = State::Open;
            // From the handshake timeout to the keepalive.
            self.timer
                .as_mut()
                .reset(Instant::now() + self.config.keepalive_interval);
        }
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        // Streams whose windows grew: flushed after the ACK, so the peer
        // never sees DATA sent under settings it does not know were
        // applied yet.
        let mut grown: Vec<usize> = Vec::new();
        for (id, value) in settings {
            match id {
                setting::HEADER_TABLE_SIZE => inner
                    .encoder
                    .get(Encoder::new)
                    .set_max_table_size((value as usize).min(4096)),
                setting::MAX_CONCURRENT_STREAMS if inner.role == Role::Client => {
                    inner.peer_max_concurrent = value;
                    inner
                        .peer_max_seen
                        .store(value, std::sync::atomic::Ordering::Relaxed);
                    for w in inner.open_waiters.drain(..) {
                        w.wake();
                    }
                }
                setting::ENABLE_PUSH if value > 1 || (value == 1 && inner.role == Role::Client) => {
                    // A server must never announce push (RFC 9113 §6.5.2).
                    let what = if value > 1 {
                        "ENABLE_PUSH above 1"
                    } else {
                        "the server announced ENABLE_PUSH 1"
                    };
                    return Err(Fault::connection(Reason::PROTOCOL_ERROR, what.into()));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    if value > frame::MAX_WINDOW {
                        return Err(Fault::connection(
                            Reason::FLOW_CONTROL_ERROR,
                            "INITIAL_WINDOW_SIZE above 2^31-1".into(),
                        ));
                    }
                    let delta = i64::from(value) - i64::from(inner.peer_initial_window);
                    inner.peer_initial_window = value;
                    if delta != 0 {
                        let mut grew = Vec::new();
                        let mut overflow = false;
                        for (key, s) in inner.streams.iter_mut() {
                            s.send_window += delta;
                            overflow |= s.send_window > i64::from(frame::MAX_WINDOW);
                            if delta > 0 && !s.send_pending.is_empty() {
                                grew.push(key);
                            }
                        }
                        if overflow {
                            return Err(Fault::connection(
                                Reason::FLOW_CONTROL_ERROR,
                                "INITIAL_WINDOW_SIZE pushed a stream window past 2^31-1".into(),
                            ));
                        }
                        grown.extend(grew);
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME..=frame::MAX_MAX_FRAME).contains(&value) {
                        return Err(Fault::connection(
                            Reason::PROTOCOL_ERROR,
                            format!("MAX_FRAME_SIZE {value} out of range"),
                        ));
                    }
                    // Larger frames save little; 16 KiB keeps writes small.
                    inner.peer_max_frame = (value as usize).min(frame::DEFAULT_MAX_FRAME as usize);
                }
                _ => {}
            }
        }
        frame::put_settings_ack(inner.wbuf());
        for key in grown {
            inner.flush_stream(key);
        }
        Ok(())
    }

    // Not on a request's path: kept out of the per-frame dispatch.
    #[inline(never)]
    pub(super) fn on_ping(&mut self, head: Head, payload: &[u8]) -> Result<(), Fault> {
        let data = frame::ping(&head, payload)?;
        if head.has(flag::ACK) {
            if let Ping::Sent(sent) = self.ping {
                if sent == data {
                    self.ping = Ping::Idle;
                    self.timer
                        .as_mut()
                        .reset(Instant::now() + self.config.keepalive_interval);
                }
            }
            return Ok(());
        }
        frame::put_ping(lock(&self.shared).wbuf(), true, data);
        Ok(())
    }

    // Not on a request's path: kept out of the per-frame dispatch.
    #[inline(never)]
    pub(super) fn on_goaway(&mut self, head: Head, payload: &[u8]) -> Result<(), Fault> {
        let goaway = frame::goaway(&head, payload)?;
        let reason = goaway.reason;
        if reason != Reason::NO_ERROR {
            let debug = String::from_utf8_lossy(goaway.debug);
            let why = if reason == Reason::ENHANCE_YOUR_CALM && debug.contains("too_many_pings") {
                // gRPC servers' keepalive enforcement (C-core, grpc-go,
                // grpc-java: one PING per 5 minutes by default).
                format!(
                    "the peer closed the connection with GOAWAY {reason} \"{debug}\": it allows fewer PINGs than torii sent (one every {} here, {}); every stream on the connection failed. Raise the cluster's http2_keepalive.interval to at least the server's permitted interval (gRPC servers default to 5m), or allow more PINGs on the server",
                    crate::config::duration::display(self.config.keepalive_interval),
                    if self.config.keepalive_while_idle { "also while idle" } else { "only while streams are open" }
                )
            } else {
                format!("the peer sent GOAWAY {reason} ({debug})")
            };
            self.end.get_or_insert(why);
        }
        if self.role == Role::Client {
            // Streams past the last one the server will process fail, as
            // never processed: they may be sent again elsewhere.
            let last = goaway.last_stream;
            let mut guard = lock(&self.shared);
            let inner = &mut *guard;
            inner.goaway_received = true;
            let refused: Vec<usize> = inner
                .streams
                .iter()
                .filter(|(_, s)| s.id > last && !s.state.is_closed())
                .map(|(key, _)| key)
                .collect();
            for key in refused {
                let s = &mut inner.streams[key];
                s.state.reset(Error::GoAway {
                    reason,
                    remote: true,
                });
                // Never written: it stays off the wire (no new streams
                // after GOAWAY), kept to be sent elsewhere.
                if let Some(head) = s.pending_head.take() {
                    s.sent_head = Some(head);
                }
                s.send_pending.clear();
                s.wake();
                inner.after_change(key);
            }
            for w in inner.open_waiters.drain(..) {
                w.wake();
            }
        }
        if matches!(self.state, State::Open | State::Settings) {
            self.state = State::Draining;
        }
        Ok(())
    }

    pub(super) fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), Fault> {
        let inc = i64::from(frame::window_update(payload)?);
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        if head.stream == 0 {
            if inc == 0 {
                return Err(Fault::connection(
                    Reason::PROTOCOL_ERROR,
                    "a WINDOW_UPDATE of 0".into(),
                ));
            }
            inner.send_window += inc;
            if inner.send_window > i64::from(frame::MAX_WINDOW) {
                return Err(Fault::connection(
                    Reason::FLOW_CONTROL_ERROR,
                    "the connection window grew past 2^31-1".into(),
                ));
            }
            inner.flush_blocked();
            return Ok(());
        }
        let Some(&key) = inner.ids.get(&head.stream) else {
            if self.is_idle(head.stream, inner) {
                return Err(Fault::connection(
                    Reason::PROTOCOL_ERROR,
                    "WINDOW_UPDATE on an idle stream".into(),
                ));
            }
            return Ok(());
        };
        if inc == 0 {
            return Err(Fault::Stream(head.stream, Reason::PROTOCOL_ERROR));
        }
        let s = &mut inner.streams[key];
        s.send_window += inc;
        if s.send_window > i64::from(frame::MAX_WINDOW) {
            return Err(Fault::Stream(head.stream, Reason::FLOW_CONTROL_ERROR));
        }
        if !s.send_pending.is_empty() {
            inner.flush_stream(key);
        }
        Ok(())
    }

    // Not on a request's path: kept out of the per-frame dispatch.
    #[inline(never)]
    pub(super) fn on_rst_stream(&mut self, head: Head, payload: &[u8]) -> Result<(), Fault> {
        let reason = frame::rst_stream(&head, payload)?;
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        let Some(&key) = inner.ids.get(&head.stream) else {
            if self.is_idle(head.stream, inner) {
                return Err(Fault::connection(
                    Reason::PROTOCOL_ERROR,
                    "RST_STREAM on an idle stream".into(),
                ));
            }
            return Ok(());
        };
        let s = &mut inner.streams[key];
        if s.state.is_closed() {
            return Ok(());
        }
        // Rapid reset (CVE-2023-44487) is a client opening streams and
        // resetting them before they are answered, faster than anyone
        // cancels for real. Counted only on the server side, only before a
        // response head, never for NO_ERROR.
        let counts = self.role == Role::Server && !s.send_head_done && reason != Reason::NO_ERROR;
        s.state.reset(Error::Reset(reason));
        s.send_pending.clear();
        s.send_trailers = None;
        s.wake();
        inner.after_change(key);
        drop(guard);
        if counts && !self.resets.take() {
            return Err(Fault::connection(
                Reason::ENHANCE_YOUR_CALM,
                format!(
                    "more than {RESET_BURST} streams reset before their response, faster than {RESET_RATE} a second (rapid reset)"
                ),
            ));
        }
        Ok(())
    }
}
