//! A listener's `json_transcoding:`: the descriptors are read (or the
//! `.proto` files compiled) and every `google.api.http` rule checked here,
//! at load, so `torii check` reports a bad template or an overlap, and a
//! reload with a bad one keeps the running configuration.

use std::sync::Arc;

use super::context::Ctx;
use super::raw::RawJsonTranscoding;
use crate::transcode::{PrintOptions, Source, Transcoder};

pub fn transcoding(cx: &mut Ctx, path: &str, raw: RawJsonTranscoding) -> Option<Arc<Transcoder>> {
    let files = |list: Option<Vec<String>>, cx: &Ctx| -> Vec<std::path::PathBuf> {
        list.unwrap_or_default()
            .iter()
            .map(|p| cx.file(p.trim()))
            .collect()
    };
    let source = Source {
        descriptors: raw.descriptors.as_deref().map(|d| cx.file(d.trim())),
        protos: files(raw.protos, cx),
        include_paths: files(raw.include_paths, cx),
        services: raw.services.unwrap_or_default(),
        print: PrintOptions {
            emit_defaults: raw
                .print
                .as_ref()
                .and_then(|p| p.emit_defaults)
                .unwrap_or(false),
            proto_field_names: raw
                .print
                .as_ref()
                .and_then(|p| p.proto_field_names)
                .unwrap_or(false),
        },
    };
    match Transcoder::load(&source) {
        Ok(t) => {
            cx.files.extend(t.files.iter().cloned());
            Some(Arc::new(t))
        }
        Err(problems) => {
            // Files that could not be read are watched too: fixing one
            // reloads.
            cx.files.extend(source.descriptors.iter().cloned());
            cx.files.extend(source.protos.iter().cloned());
            for p in problems {
                cx.key_error(path, format!("{path}: {p}"));
            }
            None
        }
    }
}
