//! Response messages → JSON (ProtoJSON, with the listener's print
//! options), the three framings of a server stream, and errors as
//! `google.rpc.Status` JSON with the HTTP status their code maps to.

use bytes::Bytes;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, SerializeOptions, Value};

use super::{is_http_body, Binding, PrintOptions};

/// One response message for the client.
pub enum Piece {
    Json(Vec<u8>),
    /// google.api.HttpBody: the bytes as they are, with their type.
    Raw {
        content_type: String,
        data: Bytes,
    },
}

fn options(print: PrintOptions) -> SerializeOptions {
    SerializeOptions::new()
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false)
        .use_proto_field_name(print.proto_field_names)
        .skip_default_fields(!print.emit_defaults)
}

fn to_json(msg: &DynamicMessage, opts: &SerializeOptions) -> Result<Vec<u8>, String> {
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut ser, opts)
        .map_err(|e| format!("cannot print the response as JSON: {e}"))?;
    Ok(ser.into_inner())
}

/// A response message (protobuf bytes) as the client gets it.
pub fn message(b: &Binding, bytes: &[u8], print: PrintOptions) -> Result<Piece, String> {
    let output = b.method.output();
    let msg = DynamicMessage::decode(output.clone(), bytes)
        .map_err(|e| format!("the upstream's {} does not decode: {e}", output.full_name()))?;
    let opts = options(print);
    let Some(field) = b.response_body.as_deref() else {
        if is_http_body(&output) {
            return Ok(raw(&msg));
        }
        return to_json(&msg, &opts).map(Piece::Json);
    };
    let f = output.get_field_by_name(field).expect("checked at load");
    let value = msg.get_field(&f);
    match (&*value, f.kind()) {
        (Value::Message(m), Kind::Message(d)) if is_http_body(&d) => Ok(raw(m)),
        (Value::Message(m), _) => to_json(m, &opts).map(Piece::Json),
        _ => {
            // A scalar or a list: printed as part of the whole message
            // (defaults included, so it is there), then taken out.
            let all = opts.clone().skip_default_fields(false);
            let json = to_json(&msg, &all)?;
            let mut obj: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&json).map_err(|e| e.to_string())?;
            let key = if print.proto_field_names {
                f.name()
            } else {
                f.json_name()
            };
            let v = obj.remove(key).unwrap_or(serde_json::Value::Null);
            serde_json::to_vec(&v)
                .map(Piece::Json)
                .map_err(|e| e.to_string())
        }
    }
}

fn raw(m: &DynamicMessage) -> Piece {
    let content_type = match m.get_field_by_name("content_type").as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let data = match m.get_field_by_name("data").as_deref() {
        Some(Value::Bytes(b)) => b.clone(),
        _ => Bytes::new(),
    };
    Piece::Raw { content_type, data }
}

/// The HTTP status for a gRPC status code (google/rpc/code.proto's table).
pub fn http_status(code: i32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500, // 2 UNKNOWN, 13 INTERNAL, 15 DATA_LOSS, and any other
    }
}

/// `{"code": …, "message": …, "details": […]}`: `details` from the
/// `grpc-status-details-bin` trailer when its types are in `pool`.
pub fn status_json(
    code: i32,
    message: &str,
    details_bin: Option<&[u8]>,
    pool: Option<&DescriptorPool>,
) -> Vec<u8> {
    let details = details_bin
        .zip(pool)
        .and_then(|(bin, pool)| details(bin, pool));
    let mut obj = serde_json::Map::new();
    obj.insert("code".into(), code.into());
    obj.insert("message".into(), message.into());
    if let Some(d) = details.filter(|d| !d.is_empty()) {
        obj.insert("details".into(), serde_json::Value::Array(d));
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}

fn details(bin: &[u8], pool: &DescriptorPool) -> Option<Vec<serde_json::Value>> {
    let desc = pool.get_message_by_name("google.rpc.Status")?;
    let status = DynamicMessage::decode(desc, bin).ok()?;
    let json = serde_json::to_value(&status).ok()?;
    match json.get("details")? {
        serde_json::Value::Array(a) => Some(a.clone()),
        _ => None,
    }
}

/// How a server stream's messages are framed in the HTTP body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `[m1,m2,…]` (the default); an error is a last `{"error": Status}`.
    Array,
    /// `application/x-ndjson`: one message per line; an error is a last
    /// `{"error": Status}` line.
    Ndjson,
    /// `text/event-stream`: `data: m` events; an error is an `error` event.
    Sse,
}

impl Framing {
    /// From the request's `Accept`.
    pub fn from_accept(accept: Option<&str>) -> Framing {
        let accept = accept.unwrap_or("").to_ascii_lowercase();
        if accept.contains("application/x-ndjson") {
            Framing::Ndjson
        } else if accept.contains("text/event-stream") {
            Framing::Sse
        } else {
            Framing::Array
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Framing::Array => "application/json",
            Framing::Ndjson => "application/x-ndjson",
            Framing::Sse => "text/event-stream",
        }
    }

    /// The bytes for one message; `first` says whether one came before.
    pub fn item(self, json: &[u8], first: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(json.len() + 8);
        match self {
            Framing::Array => {
                out.push(if first { b'[' } else { b',' });
                out.extend_from_slice(json);
            }
            Framing::Ndjson => {
                out.extend_from_slice(json);
                out.push(b'\n');
            }
            Framing::Sse => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json);
                out.extend_from_slice(b"\n\n");
            }
        }
        out
    }

    /// The bytes that end the stream: after `any` messages, with the
    /// error status JSON when it failed.
    pub fn end(self, any: bool, error: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        match (self, error) {
            (Framing::Array, e) => {
                if let Some(e) = e {
                    out.push(if any { b',' } else { b'[' });
                    out.extend_from_slice(b"{\"error\":");
                    out.extend_from_slice(e);
                    out.push(b'}');
                } else if !any {
                    out.push(b'[');
                }
                out.push(b']');
            }
            (Framing::Ndjson, Some(e)) => {
                out.extend_from_slice(b"{\"error\":");
                out.extend_from_slice(e);
                out.extend_from_slice(b"}\n");
            }
            (Framing::Sse, Some(e)) => {
                out.extend_from_slice(b"event: error\ndata: ");
                out.extend_from_slice(e);
                out.extend_from_slice(b"\n\n");
            }
            (_, None) => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framings_parse_with_and_without_error() {
        let e = status_json(5, "gone", None, None);
        let mut a = Framing::Array.item(b"{\"a\":1}", true);
        a.extend(Framing::Array.end(true, Some(&e)));
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v[1]["error"]["code"], 5);
        let empty = Framing::Array.end(false, None);
        assert_eq!(empty, b"[]");
        assert_eq!(http_status(16), 401);
        assert_eq!(http_status(8), 429);
    }
}
