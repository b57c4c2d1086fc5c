//! gRPC-JSON transcoding: the machinery the proxy's transcode phase uses.
//! A listener's `json_transcoding:` is loaded with the configuration into
//! a [`Transcoder`]: the descriptors (a FileDescriptorSet file, or `.proto`
//! files compiled here with the bundled google/api and google/rpc protos),
//! and one [`Binding`] per `google.api.http` rule (and each of its
//! `additional_bindings`), checked once: templates parse, their fields
//! exist and are scalars, no two templates of one HTTP method overlap.
//!
//! - `template.rs`: path templates, parsed and matched;
//! - `bundled.rs`: the google/api and google/rpc protos torii ships;
//! - `request.rs`: path variables, query parameters and the JSON body →
//!   the request message;
//! - `response.rs`: response messages → JSON (ProtoJSON), the streaming
//!   framings, and `google.rpc.Status` errors with their HTTP status.

pub mod bundled;
pub mod request;
pub mod response;
pub mod template;

use std::path::PathBuf;

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};

pub use template::{Template, Variable};

/// What the configuration names: where the descriptors come from, which
/// services, how JSON is printed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Source {
    pub descriptors: Option<PathBuf>,
    pub protos: Vec<PathBuf>,
    pub include_paths: Vec<PathBuf>,
    /// Empty: every service with `google.api.http` rules.
    pub services: Vec<String>,
    pub print: PrintOptions,
}

/// How response messages are printed (ProtoJSON's options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrintOptions {
    /// Print fields that hold their default value (0, "", false, []).
    pub emit_defaults: bool,
    /// Print the `.proto` field names instead of their lowerCamelCase
    /// `json_name`.
    pub proto_field_names: bool,
}

/// One HTTP rule: an HTTP method and path template for a gRPC method.
#[derive(Debug)]
pub struct Binding {
    pub http_method: Method,
    pub template: Template,
    /// None: no body; `*`: every field the path does not bind; else the
    /// top-level field the body fills.
    pub body: Option<String>,
    /// The response field that is the HTTP body (None: the whole message).
    pub response_body: Option<String>,
    pub method: MethodDescriptor,
    /// `/package.Service/Method`.
    pub grpc_path: String,
}

impl Binding {
    pub fn server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }
}

/// A listener's loaded transcoding: the bindings and print options.
#[derive(Debug)]
pub struct Transcoder {
    pub bindings: Vec<Binding>,
    pub print: PrintOptions,
    pub pool: DescriptorPool,
    /// Every file read (watched for changes, like certificates).
    pub files: Vec<PathBuf>,
}

impl Transcoder {
    /// The binding for a request, with the values of its path variables.
    pub fn find(
        &self,
        method: &Method,
        path: &str,
    ) -> Option<(&Binding, Vec<(&Variable, String)>)> {
        self.bindings
            .iter()
            .filter(|b| b.http_method == method)
            .find_map(|b| b.template.matches(path).map(|v| (b, v)))
    }

    /// Loads descriptors and checks every rule; `Err` holds every problem,
    /// each a sentence.
    pub fn load(source: &Source) -> Result<Transcoder, Vec<String>> {
        let (pool, files) = bundled::pool(source).map_err(|e| vec![e])?;
        let mut problems = Vec::new();
        let services: Vec<_> = if source.services.is_empty() {
            pool.services().collect()
        } else {
            source
                .services
                .iter()
                .filter_map(|name| {
                    let found = pool.get_service_by_name(name);
                    if found.is_none() {
                        problems.push(format!(
                            "service {name:?} is not in the descriptors{}",
                            suggest(name, pool.services().map(|s| s.full_name().to_string()))
                        ));
                    }
                    found
                })
                .collect()
        };
        let http_ext = pool.get_extension_by_name("google.api.http");
        let mut bindings = Vec::new();
        for service in &services {
            for method in service.methods() {
                let Some(rule) = http_ext.as_ref().and_then(|ext| {
                    let opts = method.options();
                    opts.has_extension(ext)
                        .then(|| opts.get_extension(ext).as_message().cloned())
                        .flatten()
                }) else {
                    continue;
                };
                if method.is_client_streaming() {
                    problems.push(format!(
                        "{} is client-streaming: JSON transcoding serves unary and \
                         server-streaming methods only; remove its google.api.http rule \
                         or leave its service out of json_transcoding.services",
                        method.full_name()
                    ));
                    continue;
                }
                rule_bindings(&method, &rule, true, &mut bindings, &mut problems);
            }
        }
        if bindings.is_empty() && problems.is_empty() {
            problems.push(
                "no method in the descriptors has a google.api.http rule: annotate methods \
                 with option (google.api.http) (import \"google/api/annotations.proto\")"
                    .to_string(),
            );
        }
        overlaps(&bindings, &mut problems);
        // `/v1/{name}:cancel` before `/v1/{name}`: a path ending in a
        // template's custom verb goes to that template (the verb-less one
        // would take `x:cancel` as the name).
        bindings.sort_by_key(|b| b.template.verb.is_none());
        if problems.is_empty() {
            Ok(Transcoder {
                bindings,
                print: source.print,
                pool,
                files,
            })
        } else {
            Err(problems)
        }
    }
}

fn suggest(name: &str, names: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = names.collect();
    let best = names
        .iter()
        .map(|n| (strsim::jaro_winkler(name, n), n))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, n)) => format!(" (did you mean {n:?}?)"),
        None if names.is_empty() => String::new(),
        None => format!("; it has {}", names.join(", ")),
    }
}

/// The bindings of one `HttpRule` message (and its additional bindings).
fn rule_bindings(
    method: &MethodDescriptor,
    rule: &DynamicMessage,
    top: bool,
    out: &mut Vec<Binding>,
    problems: &mut Vec<String>,
) {
    let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let name = method.full_name();
    let pattern = ["get", "put", "post", "delete", "patch"]
        .iter()
        .find_map(|m| text(m).map(|p| (m.to_ascii_uppercase(), p)))
        .or_else(|| {
            let custom = rule.get_field_by_name("custom")?;
            let custom = custom.as_message()?;
            let kind = match custom.get_field_by_name("kind").as_deref() {
                Some(Value::String(s)) => s.clone(),
                _ => return None,
            };
            match custom.get_field_by_name("path").as_deref() {
                Some(Value::String(p)) if !kind.is_empty() => Some((kind, p.clone())),
                _ => None,
            }
        });
    if let Some((verb, path)) = pattern {
        match binding(method, &verb, &path, text("body"), text("response_body")) {
            Ok(b) => out.push(b),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    } else if top {
        problems.push(format!(
            "{name}: its google.api.http rule names no HTTP method and path"
        ));
    }
    if let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
        for extra in more.iter().filter_map(Value::as_message) {
            if !top {
                problems.push(format!(
                    "{name}: additional_bindings may not nest additional_bindings"
                ));
                break;
            }
            rule_bindings(method, extra, false, out, problems);
        }
    }
}

fn binding(
    method: &MethodDescriptor,
    verb: &str,
    path: &str,
    body: Option<String>,
    response_body: Option<String>,
) -> Result<Binding, String> {
    let http_method = Method::from_bytes(verb.as_bytes())
        .map_err(|_| format!("{verb:?} is not an HTTP method"))?;
    let template = Template::parse(path).map_err(|e| e.to_string())?;
    let input = method.input();
    for v in &template.variables {
        let field = field_path(&input, &v.field_path).map_err(|e| format!("{path}: {e}"))?;
        if field.is_list() || field.is_map() || !is_scalar(&field.kind()) {
            return Err(format!(
                "{path}: the path field {} is {}, but path variables can only set a \
                 singular scalar or enum field",
                v.field_path.join("."),
                kind_name(&field)
            ));
        }
    }
    if let Some(b) = body.as_deref().filter(|b| *b != "*") {
        if input.get_field_by_name(b).is_none() {
            return Err(format!(
                "body {b:?} is not a field of {}",
                input.full_name()
            ));
        }
    }
    if let Some(r) = response_body.as_deref() {
        if method.output().get_field_by_name(r).is_none() {
            return Err(format!(
                "response_body {r:?} is not a field of {}",
                method.output().full_name()
            ));
        }
    }
    Ok(Binding {
        http_method,
        template,
        body,
        response_body,
        grpc_path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
        method: method.clone(),
    })
}

/// The field a dotted path names, through singular message fields.
pub fn field_path(msg: &MessageDescriptor, path: &[String]) -> Result<FieldDescriptor, String> {
    let mut msg = msg.clone();
    let mut out = None;
    for (i, name) in path.iter().enumerate() {
        let Some(field) = msg
            .get_field_by_name(name)
            .or_else(|| msg.get_field_by_json_name(name))
        else {
            return Err(format!(
                "{} has no field {name:?}{}",
                msg.full_name(),
                suggest(name, msg.fields().map(|f| f.name().to_string()))
            ));
        };
        if i + 1 < path.len() {
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => msg = m,
                _ => {
                    return Err(format!(
                        "{} is not a singular message field, so {} cannot reach into it",
                        field.name(),
                        path.join(".")
                    ))
                }
            }
        }
        out = Some(field);
    }
    out.ok_or_else(|| "an empty field path".to_string())
}

fn is_scalar(kind: &Kind) -> bool {
    !matches!(kind, Kind::Message(_))
}

fn kind_name(field: &FieldDescriptor) -> String {
    if field.is_map() {
        return "a map".into();
    }
    if field.is_list() {
        return "repeated".into();
    }
    match field.kind() {
        Kind::Message(m) => format!("a message ({})", m.full_name()),
        _ => "not a scalar".into(),
    }
}

/// Two bindings of one HTTP method whose templates some path matches
/// both: the request could go to either. (A template with a custom verb
/// and one without are not compared: the verb's wins, see `load`.)
fn overlaps(bindings: &[Binding], problems: &mut Vec<String>) {
    for (i, a) in bindings.iter().enumerate() {
        for b in &bindings[..i] {
            if a.http_method == b.http_method && a.template.overlaps(&b.template) {
                problems.push(format!(
                    "{} {} ({}) overlaps {} {} ({}): some path matches both; make one \
                     template more specific",
                    a.http_method,
                    a.template.text,
                    a.method.full_name(),
                    b.http_method,
                    b.template.text,
                    b.method.full_name()
                ));
            }
        }
    }
}

/// Whether `msg` is `google.api.HttpBody`.
pub fn is_http_body(msg: &MessageDescriptor) -> bool {
    msg.full_name() == "google.api.HttpBody"
}
