//! The configuration file as written: serde structs that mirror the YAML.
//!
//! Every field is optional and every leaf that needs a semantic check
//! (addresses, durations, names, paths, regexes, header names) is a plain
//! `String`, so deserialization only fails on the shape of the document;
//! `validate` then reports *all* semantic problems at once. Unknown keys are
//! not refused here either: `parse` collects them with `serde_ignored`.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub admin: Option<RawAdmin>,
    pub drain_timeout: Option<String>,
    pub access_log: Option<String>,
    pub listeners: Option<Vec<RawListener>>,
    pub clusters: Option<Vec<RawCluster>>,
    pub jwt_providers: Option<Vec<super::raw_auth::RawJwtProvider>>,
    pub api_keys: Option<Vec<super::raw_auth::RawApiKeys>>,
    pub tracing: Option<super::trace::RawTracing>,
    pub xds: Option<RawXds>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawXds {
    pub server: Option<String>,
    pub node: Option<RawNode>,
    pub tls: Option<RawUpstreamTls>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawNode {
    pub id: Option<String>,
    pub cluster: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawListener {
    pub name: Option<String>,
    pub address: Option<String>,
    pub protocol: Option<String>,
    pub allow_encoded_slashes: Option<bool>,
    pub header_read_timeout: Option<String>,
    pub tls: Option<RawServerTls>,
    pub health: Option<RawHealth>,
    pub routes: Option<Vec<RawRoute>>,
    pub detect_timeout: Option<String>,
    pub original_destination: Option<bool>,
    pub destination_protocols: Option<RawPortMap>,
    pub tls_passthrough: Option<Vec<RawPassthrough>>,
    pub tcp: Option<RawTcp>,
    pub json_transcoding: Option<RawJsonTranscoding>,
    pub grpc_web: Option<bool>,
    pub cors: Option<RawCors>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawJsonTranscoding {
    pub descriptors: Option<String>,
    pub protos: Option<Vec<String>>,
    pub include_paths: Option<Vec<String>>,
    pub services: Option<Vec<String>>,
    pub print: Option<RawPrint>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPrint {
    pub emit_defaults: Option<bool>,
    pub proto_field_names: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCors {
    pub allow_origins: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPassthrough {
    pub sni: Option<String>,
    pub cluster: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTcp {
    pub cluster: Option<String>,
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServerTls {
    pub certificates: Option<Vec<RawCertificate>>,
    pub alpn: Option<Vec<String>>,
    pub client_auth: Option<RawClientAuth>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub server_names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawClientAuth {
    pub ca: Option<String>,
    pub required: Option<bool>,
    pub allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHealth {
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub cluster: Option<String>,
    pub weighted_clusters: Option<Vec<RawWeightedCluster>>,
    pub direct_response: Option<RawDirectResponse>,
    pub prefix_rewrite: Option<String>,
    pub request_headers: Option<RawHeaderEdits>,
    pub response_headers: Option<RawHeaderEdits>,
    pub timeout: Option<String>,
    pub cors: Option<RawCors>,
    pub rate_limit: Option<RawRateLimit>,
    pub retry: Option<super::retry::RawRetry>,
    pub auth: Option<super::raw_auth::RawRouteAuth>,
}

/// Numbers read wide and signed, as for weights: `burst: 0` or `-1` is a
/// semantic problem with its place (src/config/rate_limit.rs).
#[derive(Debug, Default, Deserialize)]
pub struct RawRateLimit {
    pub requests_per_second: Option<f64>,
    pub burst: Option<i64>,
    pub per: Option<String>,
    pub max_keys: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawMatch {
    pub grpc_service: Option<String>,
    pub grpc_method: Option<String>,
    pub prefix: Option<String>,
    pub path: Option<String>,
    pub regex: Option<String>,
    pub host: Option<String>,
    pub headers: Option<Vec<RawHeaderMatch>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHeaderMatch {
    pub name: Option<String>,
    pub value: Option<String>,
    pub regex: Option<String>,
    pub present: Option<bool>,
    pub invert: Option<bool>,
}

/// Numbers are read wide and signed so that `weight: -1` is a semantic
/// problem ("must be at least 1") rather than a type error.
#[derive(Debug, Default, Deserialize)]
pub struct RawWeightedCluster {
    pub cluster: Option<String>,
    pub weight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawDirectResponse {
    pub status: Option<i64>,
    pub body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHeaderEdits {
    pub add: Option<OrderedMap>,
    pub remove: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCluster {
    pub name: Option<String>,
    pub endpoints: Option<Vec<RawEndpoint>>,
    pub protocol: Option<String>,
    pub tls: Option<RawUpstreamTls>,
    pub lb: Option<String>,
    pub connect_timeout: Option<String>,
    pub max_streams_per_connection: Option<i64>,
    pub max_connections_per_endpoint: Option<i64>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier_detection: Option<RawOutlierDetection>,
    pub http2_keepalive: Option<RawKeepalive>,
    pub retry_budget: Option<super::retry::RawRetryBudget>,
    pub limits: Option<super::retry::RawLimits>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawKeepalive {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub while_idle: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub jitter: Option<String>,
    pub service: Option<String>,
    pub path: Option<String>,
    pub expected_statuses: Option<Vec<i64>>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawOutlierDetection {
    pub consecutive_failures: Option<i64>,
    pub base_ejection_time: Option<String>,
    pub max_ejection_time: Option<String>,
    pub max_ejection_percent: Option<i64>,
    pub interval: Option<String>,
    pub success_rate_min_requests: Option<i64>,
    pub success_rate_min_endpoints: Option<i64>,
    pub success_rate_stdev_factor: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawUpstreamTls {
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// A string → string mapping that keeps the order it was written in, so
/// header edits apply (and problems are reported) in file order.
#[derive(Debug, Default)]
pub struct OrderedMap(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// An endpoint as written: `host:port`, or `{ address: host:port, weight: N }`.
#[derive(Debug)]
pub enum RawEndpoint {
    Plain(String),
    Full(RawEndpointFields),
}

#[derive(Debug, Default, Deserialize)]
pub struct RawEndpointFields {
    pub address: Option<String>,
    pub weight: Option<i64>,
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEndpoint;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("host:port, or a mapping like { address: host:port, weight: 2 }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEndpoint, E> {
                Ok(RawEndpoint::Plain(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEndpoint, A::Error> {
                // The derive reads the fields, so an unknown key is reported
                // as anywhere else.
                RawEndpointFields::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawEndpoint::Full)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `destination_protocols`: port → protocol, in file order. Keys are read
/// as text (`"443"` or `443`) and checked by `validate`.
#[derive(Debug, Default)]
pub struct RawPortMap(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for RawPortMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPortMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of ports to protocols, like {\"443\": tls}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPortMap, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(RawPortMap(entries))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The keys a mapping accepts, given the path of that mapping with sequence
/// indices removed (`listeners[].tls`). `None`: the path is not a struct
/// (free-form maps such as `request_headers.add`, or nothing we know).
pub fn known_keys(shape: &str) -> Option<&'static [&'static str]> {
    let route = |rest: &str| -> Option<&'static [&'static str]> {
        Some(match rest {
            "" => fields_of::<RawRoute>(),
            ".match" => fields_of::<RawMatch>(),
            ".match.headers[]" => fields_of::<RawHeaderMatch>(),
            ".weighted_clusters[]" => fields_of::<RawWeightedCluster>(),
            ".direct_response" => fields_of::<RawDirectResponse>(),
            ".request_headers" | ".response_headers" => fields_of::<RawHeaderEdits>(),
            ".rate_limit" => fields_of::<RawRateLimit>(),
            ".retry" => fields_of::<super::retry::RawRetry>(),
            ".retry.backoff" => fields_of::<super::retry::RawBackoff>(),
            ".auth" => fields_of::<super::raw_auth::RawRouteAuth>(),
            ".auth.allow[]" => fields_of::<super::raw_auth::RawAllow>(),
            _ => return None,
        })
    };
    if let Some(rest) = shape.strip_prefix("listeners[].routes[]") {
        return route(rest);
    }
    Some(match shape {
        "" => fields_of::<RawConfig>(),
        "admin" => fields_of::<RawAdmin>(),
        "listeners[]" => fields_of::<RawListener>(),
        "listeners[].tls" => fields_of::<RawServerTls>(),
        "listeners[].tls.certificates[]" => fields_of::<RawCertificate>(),
        "listeners[].tls.client_auth" => fields_of::<RawClientAuth>(),
        "listeners[].health" => fields_of::<RawHealth>(),
        "listeners[].tls_passthrough[]" => fields_of::<RawPassthrough>(),
        "listeners[].tcp" => fields_of::<RawTcp>(),
        "listeners[].json_transcoding" => fields_of::<RawJsonTranscoding>(),
        "listeners[].json_transcoding.print" => fields_of::<RawPrint>(),
        "clusters[]" => fields_of::<RawCluster>(),
        "clusters[].endpoints[]" => fields_of::<RawEndpointFields>(),
        "jwt_providers[]" => fields_of::<super::raw_auth::RawJwtProvider>(),
        "jwt_providers[].jwks" => fields_of::<super::raw_auth::RawJwks>(),
        "jwt_providers[].from[]" | "api_keys[].from[]" => {
            fields_of::<super::raw_auth::RawCredentialFrom>()
        }
        "api_keys[]" => fields_of::<super::raw_auth::RawApiKeys>(),
        "clusters[].tls" => fields_of::<RawUpstreamTls>(),
        "clusters[].health_check" => fields_of::<RawHealthCheck>(),
        "clusters[].outlier_detection" => fields_of::<RawOutlierDetection>(),
        "clusters[].http2_keepalive" => fields_of::<RawKeepalive>(),
        "clusters[].retry_budget" => fields_of::<super::retry::RawRetryBudget>(),
        "clusters[].limits" => fields_of::<super::retry::RawLimits>(),
        "xds" => fields_of::<RawXds>(),
        "xds.node" => fields_of::<RawNode>(),
        "xds.tls" => fields_of::<RawUpstreamTls>(),
        _ => return None,
    })
}

/// The field names serde derived for a struct, read back from the derive
/// itself so the "expected one of" lists can never drift from the structs.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(FieldCapture) {
        Err(Captured(fields)) => fields,
        Ok(_) => &[],
    }
}

struct FieldCapture;

#[derive(Debug)]
struct Captured(&'static [&'static str]);

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("field capture")
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Captured(&[])
    }
}

impl<'de> Deserializer<'de> for FieldCapture {
    type Error = Captured;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
        Err(Captured(&[]))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Captured> {
        Err(Captured(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_come_from_the_structs() {
        assert_eq!(
            known_keys("listeners[].tls").unwrap(),
            &["certificates", "alpn", "client_auth"]
        );
        assert!(known_keys("listeners[].routes[]")
            .unwrap()
            .contains(&"match"));
        assert!(known_keys("listeners[].routes[].match.headers[]")
            .unwrap()
            .contains(&"invert"));
        assert!(known_keys("listeners[].routes[].request_headers.add").is_none());
    }
}
