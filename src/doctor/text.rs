//! The doctor's report as people read it.

use super::*;

/// The report for people.
pub fn text(r: &Report) -> String {
    let mut s = format!(
        "torii doctor {} ({}{}, name {:?})\n",
        r.target,
        match r.mode {
            Mode::Tls => "TLS",
            Mode::Plaintext => "plaintext",
        },
        if r.mode_given { "" } else { ", guessed" },
        r.server_name
    );
    let line = |s: &mut String, what: &str, ok: Option<bool>, detail: String| {
        s.push_str(&format!("  {} {what:<22} {detail}\n", mark(ok)));
    };
    match (&r.tcp.address, &r.tcp.error) {
        (Some(a), _) => line(
            &mut s,
            "tcp",
            Some(true),
            format!("connected to {a} in {} ms", r.tcp.millis.unwrap_or(0)),
        ),
        (None, e) => line(&mut s, "tcp", Some(false), e.clone().unwrap_or_default()),
    }
    for h in &r.tls {
        let detail = if h.ok {
            format!(
                "{}, {}, ALPN selected: {}",
                h.version.clone().unwrap_or_default(),
                h.cipher.clone().unwrap_or_default(),
                h.alpn.clone().unwrap_or_else(|| "none".into())
            )
        } else {
            h.error.clone().unwrap_or_default()
        };
        line(
            &mut s,
            &format!("tls, ALPN {}", h.offered),
            Some(h.ok),
            detail,
        );
    }
    if let Some(c) = &r.certificate {
        let ok = c.problem.is_none();
        let mut detail = format!(
            "{}; SANs: {}; expires {} ({} days); ",
            c.subject,
            if c.sans.is_empty() {
                "none".into()
            } else {
                c.sans.join(", ")
            },
            c.not_after,
            c.days_left
        );
        detail += &match &c.problem {
            None => format!("verified against {}", c.roots),
            Some(p) => format!("{p} (checked against {})", c.roots),
        };
        line(&mut s, "certificate", Some(ok), detail);
    }
    if let Some(h) = &r.tls_grpc {
        line(
            &mut s,
            "gRPC health over TLS",
            Some(h.real_grpc),
            health_words(h),
        );
    }
    if let Some(f) = &r.tls_http1 {
        line(
            &mut s,
            "HTTP/1.1 over TLS",
            Some(f.answer == Answer::Http1),
            first_bytes_words(f),
        );
    }
    if let Some(h) = &r.tls_grpc_web {
        line(
            &mut s,
            "gRPC-Web over TLS",
            Some(h.real_grpc),
            health_words(h),
        );
    }
    if let Some(f) = &r.h2c {
        line(
            &mut s,
            "h2c (prior knowledge)",
            // On a TLS port a plaintext answer is information (how torii
            // or the server refuses plaintext), not a client that works.
            plain_probe(r, Some(f.answer == Answer::Http2)),
            first_bytes_words(f),
        );
    }
    if let Some(h) = &r.h2c_grpc {
        line(
            &mut s,
            "gRPC health over h2c",
            // On a TLS port a plaintext answer is information (how torii
            // or the server refuses plaintext), not a client that works.
            plain_probe(r, Some(h.real_grpc)),
            health_words(h),
        );
    }
    if let Some(f) = &r.http1 {
        line(
            &mut s,
            "HTTP/1.1 (plaintext)",
            // On a TLS port a plaintext answer is information (how torii
            // or the server refuses plaintext), not a client that works.
            plain_probe(r, Some(f.answer == Answer::Http1)),
            first_bytes_words(f),
        );
    }
    if let Some(h) = &r.http1_grpc_web {
        line(
            &mut s,
            "gRPC-Web (plaintext)",
            // On a TLS port a plaintext answer is information (how torii
            // or the server refuses plaintext), not a client that works.
            plain_probe(r, Some(h.real_grpc)),
            health_words(h),
        );
    }
    s.push_str("clients:\n");
    for c in &r.clients {
        let code = c.code.map(|c| format!("[{c}] ")).unwrap_or_default();
        s.push_str(&format!(
            "  {} {}: {code}{}\n",
            mark(c.works),
            c.client,
            c.why
        ));
        if let (Some(fix), Some(false)) = (&c.fix, c.works) {
            s.push_str(&format!("       fix: {fix}\n"));
        }
    }
    if r.ok {
        s.push_str("result: every client above can use this endpoint\n");
    } else {
        s.push_str(&format!("result: {} problem(s):\n", r.problems.len()));
        for p in &r.problems {
            s.push_str(&format!("  - {p}\n"));
        }
    }
    s
}

fn plain_probe(r: &Report, works: Option<bool>) -> Option<bool> {
    if r.mode == Mode::Tls {
        None
    } else {
        works
    }
}
