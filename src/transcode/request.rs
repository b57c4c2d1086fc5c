//! An HTTP/JSON request → the gRPC request message. The fields come from
//! three places (google/api/http.proto): the path template's variables;
//! the body (`body: "*"`: every field the path does not set; `body:
//! "field"`: that field); the query string, for every field neither sets
//! (`a.b=1` for nested fields, a name repeated for repeated fields).
//!
//! All three are gathered into one JSON object, typed by the fields'
//! kinds, and read by the ProtoJSON parser: one set of rules (int64 from
//! strings or numbers, enums by name or number, base64 bytes, well-known
//! types) for all of them, and an error that names the field's path.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value,
};
use serde_json::{Map, Value as Json};

use super::{field_path, is_http_body, Binding, Variable};

/// The request message, encoded, or what does not fit (naming the field).
pub fn encode(
    b: &Binding,
    vars: Vec<(&Variable, String)>,
    query: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Vec<u8>, String> {
    let input = b.method.input();
    // google.api.HttpBody as the whole request: the body, raw.
    if b.body.as_deref() == Some("*") && is_http_body(&input) {
        return Ok(http_body(&input, body, content_type).encode_to_vec());
    }
    let mut obj = Map::new();
    let mut raw_body_field = None;
    match b.body.as_deref() {
        None => {}
        Some("*") => match parse_json(body, "")? {
            Json::Object(m) => obj = m,
            Json::Null => {}
            other => {
                return Err(format!(
                    "the body must be a JSON object for {}, not {}",
                    input.full_name(),
                    json_kind(&other)
                ))
            }
        },
        Some(field) => {
            let f = input.get_field_by_name(field).expect("checked at load");
            match f.kind() {
                Kind::Message(m) if is_http_body(&m) => raw_body_field = Some((f, m)),
                _ => {
                    let v = parse_json(body, field)?;
                    if !v.is_null() {
                        obj.insert(field.to_string(), v);
                    }
                }
            }
        }
    }
    let mut bound: Vec<Vec<String>> = Vec::new();
    for (var, value) in vars {
        let f = field_path(&input, &var.field_path)?;
        let typed = typed(&f, &value).map_err(|e| format!("{}: {e}", var.field_path.join(".")))?;
        set(&mut obj, &input, &var.field_path, typed, false)?;
        bound.push(var.field_path.clone());
    }
    if b.body.as_deref() != Some("*") {
        if let Some(b) = b.body.as_deref() {
            bound.push(vec![b.to_string()]);
        }
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let path: Vec<String> = k.split('.').map(str::to_string).collect();
            let f = field_path(&input, &path).map_err(|e| format!("query parameter {k:?}: {e}"))?;
            // Fields the path or the body set are not read from the query.
            if bound.iter().any(|p| path.starts_with(p)) {
                continue;
            }
            if matches!(f.kind(), Kind::Message(ref m) if !is_scalar_message(m)) || f.is_map() {
                return Err(format!(
                    "query parameter {k:?}: {} is a message; set its fields (\"{k}.name=…\")",
                    f.full_name()
                ));
            }
            let typed = typed(&f, &v).map_err(|e| format!("{k}: {e}"))?;
            set(&mut obj, &input, &path, typed, f.is_list())?;
        }
    }
    let mut msg = deserialize(&input, Json::Object(obj))?;
    if let Some((f, m)) = raw_body_field {
        msg.set_field(&f, Value::Message(http_body(&m, body, content_type)));
    }
    Ok(msg.encode_to_vec())
}

fn http_body(m: &MessageDescriptor, body: &[u8], content_type: Option<&str>) -> DynamicMessage {
    let mut hb = DynamicMessage::new(m.clone());
    hb.set_field_by_name(
        "content_type",
        Value::String(content_type.unwrap_or("").to_string()),
    );
    hb.set_field_by_name("data", Value::Bytes(Bytes::copy_from_slice(body)));
    hb
}

fn parse_json(body: &[u8], field: &str) -> Result<Json, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json::Null);
    }
    serde_json::from_slice(body).map_err(|e| {
        let at = if field.is_empty() {
            String::new()
        } else {
            format!(" (for field {field})")
        };
        format!("the body is not JSON{at}: {e}")
    })
}

/// The JSON object read as `input` by ProtoJSON's rules; the error names
/// the field path.
pub fn deserialize(input: &MessageDescriptor, json: Json) -> Result<DynamicMessage, String> {
    let opts = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(json, &mut track);
    DynamicMessage::deserialize_with_options(input.clone(), de, &opts).map_err(|e| {
        let path = track.path().to_string();
        if path == "." || path.is_empty() {
            format!("{e}")
        } else {
            format!("field {path}: {e}")
        }
    })
}

/// Well-known messages written as one JSON string or number.
fn is_scalar_message(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// A path or query value as the JSON ProtoJSON expects for the field.
fn typed(f: &FieldDescriptor, s: &str) -> Result<Json, String> {
    typed_kind(&f.kind(), s)
}

fn typed_kind(kind: &Kind, s: &str) -> Result<Json, String> {
    Ok(match kind {
        Kind::Bool => match s {
            "true" | "1" => Json::Bool(true),
            "false" | "0" => Json::Bool(false),
            _ => return Err(format!("{s:?} is not a bool (true or false)")),
        },
        Kind::Enum(_) => match s.parse::<i64>() {
            Ok(n) => Json::from(n),
            Err(_) => Json::String(s.to_string()),
        },
        Kind::Message(m) => match m.get_field_by_name("value") {
            Some(inner)
                if m.full_name().starts_with("google.protobuf.")
                    && m.full_name().ends_with("Value") =>
            {
                typed_kind(&inner.kind(), s)?
            }
            _ => Json::String(s.to_string()),
        },
        _ => Json::String(s.to_string()),
    })
}

/// Sets `path` in the JSON object (by proto field name; a JSON name for
/// the same field is dropped first), appending for repeated fields.
fn set(
    obj: &mut Map<String, Json>,
    msg: &MessageDescriptor,
    path: &[String],
    value: Json,
    append: bool,
) -> Result<(), String> {
    let Some(f) = msg
        .get_field_by_name(&path[0])
        .or_else(|| msg.get_field_by_json_name(&path[0]))
    else {
        return Err(format!("{} has no field {:?}", msg.full_name(), path[0]));
    };
    if f.json_name() != f.name() {
        if let Some(v) = obj.remove(f.json_name()) {
            obj.entry(f.name().to_string()).or_insert(v);
        }
    }
    if path.len() == 1 {
        if append {
            let slot = obj
                .entry(f.name().to_string())
                .or_insert_with(|| Json::Array(Vec::new()));
            match slot {
                Json::Array(a) => a.push(value),
                other => *other = Json::Array(vec![value]),
            }
        } else {
            obj.insert(f.name().to_string(), value);
        }
        return Ok(());
    }
    let Kind::Message(inner) = f.kind() else {
        return Err(format!("{} is not a message", f.name()));
    };
    let slot = obj
        .entry(f.name().to_string())
        .or_insert_with(|| Json::Object(Map::new()));
    if !slot.is_object() {
        *slot = Json::Object(Map::new());
    }
    let Json::Object(child) = slot else {
        unreachable!("made an object above")
    };
    set(child, &inner, &path[1..], value, append)
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a bool",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}
