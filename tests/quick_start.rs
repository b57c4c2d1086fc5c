//! The README's quick-start config is real: taken from the README as it
//! is, with certificates made for it, `torii check` accepts it.

mod support;

use support::*;

/// The first ```yaml block after the "## Quick start" heading.
fn quick_start_yaml() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    yaml_after(&readme, "Quick start")
}

#[test]
fn the_readme_quick_start_passes_check() {
    let yaml = quick_start_yaml();
    assert!(yaml.contains("client_auth"), "the mTLS setup: {yaml}");
    let dir = TempDir::new("quick-start");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let pki = TestPki::new("quick start CA");
    pki.server_cert(&["localhost"])
        .write_to(&certs, "server")
        .unwrap();
    pki.write_ca(&certs, "clients-ca").unwrap();
    let config = dir.path().join("torii.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let out = torii_check(&config);
    assert!(
        out.status.success(),
        "torii check refused the README's quick start:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
