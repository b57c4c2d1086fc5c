//! Every fuzz target's corpus (`fuzz/corpus/<target>/`: named seeds written
//! by `cargo test --test fuzz_corpus -- --ignored write_seeds`, plus
//! coverage-minimised inputs from fuzzing runs) replayed through the very
//! checks the target runs (`fuzz/src/checks/`, included here), so that what
//! fuzzing once established stays true in the normal `cargo test`.
//!
//! Inputs that reproduce known, unfixed bugs live in
//! `fuzz/regressions/<target>/`; their tests are ignored with "FAILS: ..."
//! until the bug is fixed (then the `#[ignore]` goes and the input moves
//! to the corpus).

#[allow(dead_code)]
#[path = "../fuzz/src/checks/mod.rs"]
mod checks;

use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: checks::alloc::Counting = checks::alloc::Counting;

fn dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn hex(data: &[u8]) -> String {
    let shown: String = data.iter().take(96).map(|b| format!("{b:02x}")).collect();
    if data.len() > 96 {
        format!("{shown}... ({} bytes)", data.len())
    } else {
        shown
    }
}

/// Runs every input of `dir` through `target`'s checks; panics listing
/// those that fail.
fn replay_dir(target: &str, dir: &Path) -> usize {
    let check = checks::target(target);
    let files = files(dir);
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: input {}\n{why}", file.display(), hex(&data)));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    files.len()
}

fn replay(target: &str) {
    let n = replay_dir(target, &dir("corpus", target));
    assert!(n >= 3, "{target}: only {n} inputs in its corpus");
}

#[test]
fn hpack_decode() {
    replay("hpack_decode");
}

#[test]
fn hpack_round_trip() {
    replay("hpack_round_trip");
}

#[test]
fn huffman() {
    replay("huffman");
}

#[test]
fn h2_frames() {
    replay("h2_frames");
}

#[test]
fn h2_server_raw() {
    replay("h2_server_raw");
}

#[test]
fn h2_server_structured() {
    replay("h2_server_structured");
}

#[test]
fn h2_client() {
    replay("h2_client");
}

#[test]
fn path() {
    replay("path");
}

#[test]
fn grpc_timeout() {
    replay("grpc_timeout");
}

#[test]
fn jwt_token() {
    replay("jwt_token");
}

#[test]
fn auth_claims() {
    replay("auth_claims");
}

#[test]
fn path_template() {
    replay("path_template");
}

#[test]
fn config() {
    replay("config");
}

#[test]
fn grpc_web() {
    replay("grpc_web");
}

/// Finding 4c of issue 23, found again by `h2_server_raw` within seconds,
/// by `h2_server_structured`, and on the upstream side by `h2_client`: a
/// PRIORITY frame of a length other than 5 was answered with
/// RST_STREAM(FRAME_SIZE_ERROR) whatever stream it named — idle ones
/// included (client bytes `00 00 00 02 00 00 00 00 08`: RST_STREAM on idle
/// stream 8, RFC 9113 §6.4) — and on an open stream torii then sent HEADERS
/// and DATA on the stream it had just reset.
#[test]
fn regression_4c_priority_of_a_bad_length() {
    let mut failed = Vec::new();
    for (target, name) in [
        ("h2_server_raw", "4c-priority-length-0-on-idle-stream-8"),
        (
            "h2_server_structured",
            "4c-priority-length-0-on-idle-stream",
        ),
        (
            "h2_server_structured",
            "4c-priority-length-3-on-open-stream",
        ),
        // The same code answers an upstream's PRIORITY.
        (
            "h2_client",
            "4c-upstream-priority-length-0-on-idle-stream-3",
        ),
    ] {
        let data = std::fs::read(dir("regressions", target).join(name)).unwrap();
        if std::panic::catch_unwind(|| checks::target(target)(&data)).is_err() {
            failed.push(format!("{target}/{name}"));
        }
    }
    assert!(failed.is_empty(), "still failing: {failed:?}");
}

/// Found by `h2_server_structured`: after a graceful GOAWAY (last stream
/// 1), the client opens stream 3 and then the even stream 4; torii's
/// connection-error GOAWAY then named last stream 3, more than the 1 it
/// had sent before (RFC 9113 §6.8: endpoints MUST NOT increase the last stream
/// identifier they send): `last_peer_stream` moves for streams that arrive
/// while draining, which are not processed.
#[test]
fn regression_goaway_last_stream_never_increases() {
    let file = dir("regressions", "h2_server_structured")
        .join("goaway-last-stream-increases-after-graceful-goaway");
    let data = std::fs::read(file).unwrap();
    checks::target("h2_server_structured")(&data);
}

/// Every target has its file, its corpus and a test above.
#[test]
fn every_target_is_replayed() {
    let src = std::fs::read_to_string(file!()).unwrap();
    for (name, _) in checks::TARGETS {
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
        assert!(
            src.contains(&format!("replay(\"{name}\")")),
            "{name} is not replayed"
        );
    }
}

// ---- seeds ----

fn write(target: &str, name: &str, data: &[u8]) {
    write_to("corpus", target, &format!("seed-{name}"), data);
}

fn write_to(kind: &str, target: &str, name: &str, data: &[u8]) {
    let d = dir(kind, target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), data).unwrap();
}

fn chunk(out: &mut Vec<u8>, block: &[u8]) {
    assert!(block.len() < 0x8000);
    if block.len() < 0x80 {
        out.push(block.len() as u8);
    } else {
        out.push(0x80 | (block.len() >> 8) as u8);
        out.push(block.len() as u8);
    }
    out.extend_from_slice(block);
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let l = (payload.len() as u32).to_be_bytes();
    out.extend_from_slice(&[l[1], l[2], l[3], kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A gRPC request head: static :method POST, :scheme http, then literals.
fn grpc_head() -> Vec<u8> {
    let mut b = vec![0x83, 0x86];
    for (n, v) in [
        (&b":path"[..], &b"/pkg.Svc/Method"[..]),
        (b":authority", b"upstream"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ] {
        b.push(0);
        b.push(n.len() as u8);
        b.extend_from_slice(n);
        b.push(v.len() as u8);
        b.extend_from_slice(v);
    }
    b
}

/// Writes the named seeds of every target. Run after changing an input
/// format: `cargo test --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    // hpack_decode: RFC 7541 C.3-C.6, each a connection of three blocks.
    let rfc: [(&str, u8, [&str; 3]); 4] = [
        (
            "c3-requests",
            0,
            [
                "828684410f7777772e6578616d706c652e636f6d",
                "828684be58086e6f2d6361636865",
                "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
            ],
        ),
        (
            "c4-requests-huffman",
            0,
            [
                "828684418cf1e3c2e5f23a6ba0ab90f4ff",
                "828684be5886a8eb10649cbf",
                "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
            ],
        ),
        (
            "c5-responses",
            3,
            [
                "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
                "4803333037c1c0bf",
                "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31",
            ],
        ),
        (
            "c6-responses-huffman",
            3,
            [
                "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
                "4883640effc1c0bf",
                "88c16196d07abe941054d444a8200595040b8166e084a62d1bff c05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
            ],
        ),
    ];
    for (name, limit, blocks) in rfc {
        let mut d = vec![limit, 0];
        for b in blocks {
            chunk(&mut d, &unhex(b));
        }
        write("hpack_decode", name, &d);
    }
    // A size update to 0 and back, then an insert; a small list limit.
    let mut d = vec![0, 2];
    chunk(&mut d, &unhex("20 3fe11f 400161 0162 be"));
    chunk(&mut d, &unhex("be 1f11 0178"));
    write("hpack_decode", "size-updates", &d);

    // hpack_round_trip: programs of blocks (see checks/hpack.rs).
    write(
        "hpack_round_trip",
        "credentials",
        &[1, 3, 5, 3, 2, b'a', b'b', 0, 0, 6, 2, 0, 0],
    );
    write(
        "hpack_round_trip",
        "shrink-table",
        &[
            0, 0, 2, 9, 2, 40, 1, 0, 1, 2, 13, 3, 4, b't', b'o', b'k', b'n', 0,
        ],
    );
    write("hpack_round_trip", "long-path", &[1, 1, 0, 2, 200, 1]);

    // huffman
    write("huffman", "www", &unhex("f1e3c2e5f23a6ba0ab90f4ff"));
    write(
        "huffman",
        "date",
        &unhex("d07abe941054d444a8200595040b8166e082a62d1bff"),
    );
    write("huffman", "eos", &[0xff; 4]);
    write("huffman", "padding", &[0x1f, 0xff]);

    // h2_frames: padded HEADERS with priority, padded DATA, a bad pad.
    let mut d = Vec::new();
    let mut p = vec![2, 0, 0, 0, 3, 16];
    p.extend(grpc_head());
    p.extend([0, 0]);
    frame(&mut d, 1, 0x2c, 1, &p);
    frame(&mut d, 0, 0x09, 1, &[3, b'x', 0, 0, 0]);
    frame(&mut d, 0, 0x08, 1, &[9, b'x']);
    frame(
        &mut d,
        1,
        0x05,
        3,
        &[
            0x88, 0x00, 0x0a, b'c', b'o', b'n', b'n', b'e', b'c', b't', b'i', b'o', b'n', 0x01,
            b'x',
        ],
    );
    write("h2_frames", "padded", &d);
    let mut d = vec![4];
    d.extend(grpc_head());
    write("h2_frames", "split-block", &d);
    let mut d = Vec::new();
    frame(
        &mut d,
        1,
        0x05,
        1,
        &[
            0x82, 0x87, 0x84, 0x00, 0x0e, b'c', b'o', b'n', b't', b'e', b'n', b't', b'-', b'l',
            b'e', b'n', b'g', b't', b'h', 0x02, b'1', b'2',
        ],
    );
    frame(
        &mut d,
        1,
        0x05,
        3,
        &[0x88, 0x40, 0x02, b't', b'e', 0x03, b'f', b'o', b'o'],
    );
    write("h2_frames", "fields", &d);

    // Finding 4c: PRIORITY of length 0 on the idle stream 8.
    let mut d = vec![255, 0];
    d.extend([0, 0, 0, 2, 0, 0, 0, 0, 8]);
    write_to(
        "regressions",
        "h2_server_raw",
        "4c-priority-length-0-on-idle-stream-8",
        &d,
    );

    // h2_server_raw: [read size][options] then client frames.
    let mut unary = Vec::new();
    frame(&mut unary, 1, 0x04, 1, &grpc_head());
    frame(&mut unary, 0, 0x01, 1, &[0, 0, 0, 0, 3, 1, 2, 3]);
    frame(&mut unary, 4, 0x01, 0, &[]);
    let mut d = vec![255, 0];
    d.extend(&unary);
    write("h2_server_raw", "unary", &d);
    let mut d = vec![0, 0x0f];
    d.extend(&unary);
    write("h2_server_raw", "unary-bytewise-stops-reading", &d);
    let mut d = vec![255, 0];
    for id in [1u32, 3, 5] {
        frame(&mut d, 1, 0x04, id, &grpc_head());
        frame(&mut d, 0, 0x00, id, &[0; 100]);
    }
    frame(&mut d, 3, 0, 3, &8u32.to_be_bytes());
    frame(&mut d, 8, 0, 1, &0u32.to_be_bytes());
    frame(&mut d, 6, 0, 0, &[1; 8]);
    frame(&mut d, 4, 0, 0, &[0, 4, 0, 0, 0, 0]);
    frame(&mut d, 4, 0, 0, &[0, 4, 0, 1, 0, 0]);
    frame(&mut d, 8, 0, 5, &1000u32.to_be_bytes());
    frame(&mut d, 0, 0x01, 5, &[1; 10]);
    write("h2_server_raw", "streams-resets-windows", &d);
    let mut d = vec![255, 0x08];
    frame(&mut d, 1, 0x00, 1, &grpc_head()[..4]);
    frame(&mut d, 9, 0x04, 1, &grpc_head()[4..]);
    frame(&mut d, 7, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
    write("h2_server_raw", "continuation-goaway-time", &d);

    // h2_server_structured: [options][read size] then steps (see
    // h2server::step): 0 HEADERS (stream pick 0 = the last one, flags,
    // END_HEADERS pick, pad, block pick 1 = gRPC, no content-length),
    // 12 respond, 13 send 16 KiB, 14 trailers, 16 read bodies, 7 PING,
    // 19 an hour passes.
    write(
        "h2_server_structured",
        "grpc-call",
        &[
            0, 255, 0, 0, 0x04, 1, 0, 1, 0, 12, 0, 1, 13, 2, 0, 0, 14, 1, 0, 16, 7, 0, 0, 0, 0, 0,
            19, 5,
        ],
    );
    write(
        "h2_server_structured",
        "window-zero-reset",
        &[
            1, 0, 0, 0, 0x05, 1, 0, 1, 0, 12, 0, 1, 6, 0, 1, 3, 0, 0, 13, 3, 1, 0, 8, 1, 0, 0, 15,
            0, 0, 18, 0, 19, 4,
        ],
    );
    // Finding 4c: PRIORITY of length 3 on the open stream 1; the
    // application answers and sends 10 bytes.
    write_to(
        "regressions",
        "h2_server_structured",
        "4c-priority-length-3-on-open-stream",
        &[
            0, 255, 0, 0, 0x04, 1, 0, 1, 0, 9, 0, 0, 3, 12, 0, 1, 13, 1, 1, 0,
        ],
    );

    // Draining: HEADERS 1, graceful GOAWAY (step 18, choice 2), HEADERS 3,
    // HEADERS on the even stream 4 (a connection error).
    write_to(
        "regressions",
        "h2_server_structured",
        "goaway-last-stream-increases-after-graceful-goaway",
        &[
            0, 255, 0, 0, 4, 1, 0, 0, 18, 2, 0, 3, 4, 1, 0, 0, 0, 5, 2, 4, 1, 0, 0,
        ],
    );

    // Finding 4c upstream: a raw chunk (step 0) with PRIORITY of length 0
    // on the idle stream 3.
    write_to(
        "regressions",
        "h2_client",
        "4c-upstream-priority-length-0-on-idle-stream-3",
        &[0, 255, 0, 9, 0, 0, 0, 2, 0, 0, 0, 0, 3],
    );

    // h2_client: [options][read size] then steps (see h2client::step):
    // 2 HEADERS :status 200 on a stream torii opened, 5 DATA, 2 trailers,
    // 12 another request streaming 70 KB, 10 GOAWAY, 15 time.
    write(
        "h2_client",
        "response-and-goaway",
        &[
            0, 255, 2, 0, 0, 0x04, 1, 0, 5, 0, 0, 0, 2, 2, 0, 0, 0x05, 1, 2, 1, 12, 0, 2, 10, 0, 0,
            0, 15, 3,
        ],
    );
    write(
        "h2_client",
        "raw-garbage",
        &[
            1, 0, 0, 20, b'<', b'!', b'D', b'O', b'C', b'T', b'Y', b'P', b'E', b' ', b'h', b't',
            b'm', b'l', b'>', b'\n', b'<', b'h', b't', b'm',
        ],
    );
    write(
        "h2_client",
        "too-many-pings",
        &[
            0, 10, 12, 1, 1, 15, 3, 9, 1, 15, 3, 10, 0, 0, 0, 2, 14, 0, 15, 4,
        ],
    );

    // path
    for (name, p) in [
        ("dots", "/a/./b/../../c/"),
        ("escaped-dots", "/%2e%2E/x/%2e/y/.%2e"),
        ("slashes", "//admin///x"),
        ("escapes", "/%61dmin/%2f/%5c/%7e%41%zz"),
        ("utf8", "/caf\u{e9}/\u{1f600}/.."),
        ("relative", "a/b"),
    ] {
        write("path", name, p.as_bytes());
    }

    // path_template: two templates and a path, one per line.
    for (name, t) in [
        (
            "nested",
            "/v1/{name=shelves/*/books/*}\n/v1/shelves/{s}/books/{b}\n/v1/shelves/1/books/2",
        ),
        ("verb", "/v1/{name}:cancel\n/v1/{name}\n/v1/x:cancel"),
        ("rest", "/files/{path=**}\n/files/a/**\n/files/a/b%2Fc/d"),
        (
            "rest-empty",
            "/files/{path=**}:get\n/files/**:get\n/files:get",
        ),
        ("literals", "/v1/a/b\n/v1/*/b\n/v1/a/b"),
        ("bad", "/v1/{a=**}/x\n/{1}\n//"),
        ("escapes", "/v1/{a.b.c}\n/v1/*\n/v1/%E2%82%AC%zz"),
    ] {
        write("path_template", name, t.as_bytes());
    }

    // grpc_timeout
    for t in ["100m", "1H", "99999999S", "0n", "12345678u", "7M"] {
        write("grpc_timeout", t, t.as_bytes());
    }
    write(
        "grpc_timeout",
        "bytes",
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    );

    // grpc_web: the first byte seeds the cuts (bit 7: also round-trip).
    let frame = |flag: u8, payload: &[u8]| {
        let mut f = vec![flag];
        f.extend((payload.len() as u32).to_be_bytes());
        f.extend(payload);
        f
    };
    for (name, seed, body) in [
        ("padded-flushes", 0x83u8, b"AAAAAAc=aGk=".to_vec()),
        ("padding-mid-group", 2, b"A=AA".to_vec()),
        ("partial-quantum", 1, b"AAAAAAA".to_vec()),
        ("bad-char", 4, b"AA!A".to_vec()),
        (
            "two-frames",
            0x85,
            [frame(0, b"hi"), frame(1, b"")].concat(),
        ),
        ("trailers-frame", 3, frame(0x80, b"grpc-status: 0\r\n")),
        ("truncated", 6, frame(0, b"hello")[..7].to_vec()),
    ] {
        let mut input = vec![seed];
        input.extend(body);
        write("grpc_web", name, &input);
    }

    // jwt_token: a header line, then a token.
    let b = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let good = format!(
        "{}.{}.{}",
        b(r#"{"alg":"ES256","kid":"k1"}"#),
        b(r#"{"iss":"i","exp":1}"#),
        b("sig")
    );
    for (name, line, token) in [
        ("valid", format!("Bearer {good}"), good.clone()),
        ("lower-two-spaces", format!("bearer  {good}"), good.clone()),
        ("junk", format!("Bearer {good} junk"), format!("{good}###")),
        ("padding", format!("Bearer {good}="), format!("{good}=")),
        (
            "tab",
            format!("Bearer {good}"),
            good.replacen('.', ".\t", 1),
        ),
        (
            "alg-none",
            "Basic x".to_string(),
            format!("{}.{}.", b(r#"{"alg":"none"}"#), b("{}")),
        ),
        (
            "crit",
            String::new(),
            format!(
                "{}.{}.{}",
                b(r#"{"alg":"ES256","crit":["x"]}"#),
                b("{}"),
                b("s")
            ),
        ),
    ] {
        write("jwt_token", name, format!("{line}\n{token}").as_bytes());
    }
    // auth_claims: path, values, claims.
    for (name, input) in [
        (
            "scope",
            "scope\norders.read|x\n{\"scope\":\"orders.read orders.write\"}",
        ),
        ("array", "groups\nb\n{\"groups\":[\"a\",\"b\"]}"),
        ("nested", "org.id\n7\n{\"org\":{\"id\":7}}"),
        ("dotted-name", "a.b\nx\n{\"a.b\":\"x\",\"a\":{\"b\":\"y\"}}"),
        ("bool", "admin\ntrue\n{\"admin\":true}"),
        ("missing", "sub\nalice\n{}"),
    ] {
        write("auth_claims", name, input.as_bytes());
    }

    // config: the test configurations.
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs");
    for file in files(&configs) {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        write("config", &name, &std::fs::read(&file).unwrap());
    }
}
