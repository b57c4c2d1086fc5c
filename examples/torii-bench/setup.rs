//! `torii-bench setup`: the certificate and the request bodies.

use std::fs;
use std::path::Path;

use prost::Message;
use torii::demo::certs::TestPki;
use torii::echo_pb::EchoRequest;

use crate::Error;

/// One gRPC message on the wire: flag 0 (uncompressed), length, protobuf.
pub fn grpc_frame(payload_len: usize) -> Vec<u8> {
    let msg = EchoRequest {
        payload: vec![b'x'; payload_len],
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = Vec::with_capacity(5 + msg.len());
    frame.push(0);
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

pub fn run(dir: &Path, sizes: &[usize]) -> Result<(), Error> {
    fs::create_dir_all(dir)?;
    // The leaf is the only certificate sent, by every proxy alike; clients
    // do not verify it (see tls.rs), so the CA is not written.
    let pki = TestPki::new("torii bench CA");
    let leaf = pki.server_cert(&["localhost", "127.0.0.1"]);
    let (cert, key) = leaf.write_to(dir, "server")?;
    fs::write(
        dir.join("server.pem"),
        format!("{}{}", leaf.cert_pem, leaf.key_pem),
    )?;
    let mut bodies = serde_json::Map::new();
    for &size in sizes {
        let path = dir.join(format!("unary-{size}.bin"));
        fs::write(&path, grpc_frame(size))?;
        bodies.insert(size.to_string(), path.display().to_string().into());
    }
    let out = serde_json::json!({
        "cert": cert.display().to_string(),
        "key": key.display().to_string(),
        "pem": dir.join("server.pem").display().to_string(),
        "bodies": bodies,
    });
    println!("{out}");
    Ok(())
}
