//! The google/api and google/rpc protos torii ships (the repository's
//! `proto/google/`), so `.proto` files that import them compile without a
//! googleapis checkout; and the descriptor pool a listener's transcoding
//! reads, from a FileDescriptorSet file or from `.proto` files compiled
//! here (protox, in-process).

use std::path::{Path, PathBuf};

use prost::Message;
use prost_reflect::DescriptorPool;
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

use super::Source;

/// `(import name, source)` of every bundled file.
pub const FILES: &[(&str, &str)] = &[
    (
        "google/api/annotations.proto",
        include_str!("../../proto/google/api/annotations.proto"),
    ),
    (
        "google/api/http.proto",
        include_str!("../../proto/google/api/http.proto"),
    ),
    (
        "google/api/httpbody.proto",
        include_str!("../../proto/google/api/httpbody.proto"),
    ),
    (
        "google/rpc/status.proto",
        include_str!("../../proto/google/rpc/status.proto"),
    ),
    (
        "google/rpc/code.proto",
        include_str!("../../proto/google/rpc/code.proto"),
    ),
];

/// Resolves the bundled files by their import names.
struct Bundled;

impl FileResolver for Bundled {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match FILES.iter().find(|(n, _)| *n == name) {
            Some((n, src)) => File::from_source(n, src),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// The pool for `source`, with google.rpc.Status always in it (for error
/// details), and the files read.
pub fn pool(source: &Source) -> Result<(DescriptorPool, Vec<PathBuf>), String> {
    let mut files = Vec::new();
    let mut pool = match (&source.descriptors, source.protos.is_empty()) {
        (Some(_), false) => {
            return Err("write descriptors: or protos:, not both".to_string());
        }
        (None, true) => {
            return Err(
                "name the services' descriptors: descriptors: FILE (a FileDescriptorSet, \
                 protoc --include_imports --descriptor_set_out=FILE) or protos: [FILES]"
                    .to_string(),
            );
        }
        (Some(path), true) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read descriptors {}: {e}", path.display()))?;
            files.push(path.clone());
            DescriptorPool::decode(bytes.as_slice()).map_err(|e| {
                format!(
                    "descriptors {} is not a usable FileDescriptorSet: {e} (make it with \
                     protoc --include_imports --descriptor_set_out=FILE)",
                    path.display()
                )
            })?
        }
        (None, false) => {
            files.extend(source.protos.iter().cloned());
            compile(&source.protos, &source.include_paths)?
        }
    };
    if pool.get_message_by_name("google.rpc.Status").is_none() {
        let set = compile_bundled(&["google/rpc/status.proto"])?;
        pool.add_file_descriptor_set(set)
            .map_err(|e| format!("cannot add google/rpc/status.proto: {e}"))?;
    }
    Ok((pool, files))
}

/// Compiles `.proto` files: each include path, then the protos' own
/// folders, then the bundled google/api and google/rpc files and
/// google/protobuf's well-known types.
fn compile(protos: &[PathBuf], includes: &[PathBuf]) -> Result<DescriptorPool, String> {
    let mut chain = ChainFileResolver::new();
    let mut dirs: Vec<PathBuf> = includes.to_vec();
    for p in protos {
        let dir = p.parent().unwrap_or(Path::new("")).to_path_buf();
        if !dirs.contains(&dir) && !includes.iter().any(|i| p.starts_with(i)) {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        chain.add(IncludeFileResolver::new(dir));
    }
    chain.add(Bundled);
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true);
    for p in protos {
        compiler
            .open_file(p)
            .map_err(|e| format!("cannot compile {}: {e}", p.display()))?;
    }
    let bytes = compiler.encode_file_descriptor_set();
    DescriptorPool::decode(bytes.as_slice()).map_err(|e| format!("compiled protos: {e}"))
}

/// The bundled files named (and what they import), as a descriptor set.
pub fn compile_bundled(
    names: &[&str],
) -> Result<prost_reflect::prost_types::FileDescriptorSet, String> {
    let mut chain = ChainFileResolver::new();
    chain.add(Bundled);
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true);
    for n in names {
        compiler
            .open_file(n)
            .map_err(|e| format!("bundled {n}: {e}"))?;
    }
    prost_reflect::prost_types::FileDescriptorSet::decode(
        compiler.encode_file_descriptor_set().as_slice(),
    )
    .map_err(|e| e.to_string())
}
