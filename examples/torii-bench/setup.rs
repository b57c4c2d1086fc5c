//! `torii-bench setup`: the certificate and the request bodies.

use std::fs;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use prost::Message;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
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
    let (jwks, jwt) = jwt(dir)?;
    let out = serde_json::json!({
        "jwks": jwks.display().to_string(),
        "jwt": jwt,
        "jwt_issuer": JWT_ISSUER,
        "jwt_audience": JWT_AUDIENCE,
        "cert": cert.display().to_string(),
        "key": key.display().to_string(),
        "pem": dir.join("server.pem").display().to_string(),
        "bodies": bodies,
    });
    println!("{out}");
    Ok(())
}

/// The issuer and audience of the token the authenticated scenario sends.
const JWT_ISSUER: &str = "https://bench.torii.test";
const JWT_AUDIENCE: &str = "bench";

/// An ES256 key's JWKS (`jwks.json` in `dir`) and one token it signs, valid
/// for a day: what a client with a cached access token sends on every
/// request.
fn jwt(dir: &Path) -> Result<(std::path::PathBuf, String), Error> {
    let rng = SystemRandom::new();
    let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| "generating a P-256 key")?;
    let key =
        EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).map_err(|_| "reading the P-256 key")?;
    let b64 = |d: &[u8]| URL_SAFE_NO_PAD.encode(d);
    let point = key.public_key().as_ref();
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "bench", "use": "sig",
        "x": b64(&point[1..33]), "y": b64(&point[33..]),
    }]});
    let path = dir.join("jwks.json");
    fs::write(&path, jwks.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?
        .as_secs();
    let header = serde_json::json!({"alg": "ES256", "kid": "bench", "typ": "JWT"});
    let claims = serde_json::json!({
        "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": "bench-client",
        "iat": now, "exp": now + 86_400, "scope": "echo",
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key
        .sign(&rng, input.as_bytes())
        .map_err(|_| "signing the token")?;
    Ok((path, format!("{input}.{}", b64(sig.as_ref()))))
}
