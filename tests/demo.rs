//! `torii demo` as a new user meets it: the commands it prints work when
//! pasted into a shell as printed (`torii` is not on the PATH of someone
//! who ran `cargo run`), and its temporary folder is gone when it stops —
//! after Ctrl-C/SIGTERM and after a failed start alike.

mod support;

use std::process::Stdio;

use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

fn demo(tmp: &TempDir, tls: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_torii"));
    cmd.args([
        "demo",
        "--tls-address",
        tls,
        "--plain-address",
        "127.0.0.1:0",
    ])
    .env("TMPDIR", tmp.path())
    .env("NO_COLOR", "1")
    .stdin(Stdio::null())
    .kill_on_drop(true);
    cmd
}

fn entries(tmp: &TempDir) -> Vec<String> {
    std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn printed_commands_run_as_printed_and_the_folder_goes_with_the_demo() {
    let tmp = TempDir::new("demo-tmp");
    let mut child = demo(&tmp, "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let read_all = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("Ctrl-C to stop");
            seen.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE * 3, read_all)
        .await
        .expect("the demo prints its tour");
    assert!(
        seen.iter()
            .filter(|l| l.trim_start().starts_with("ok "))
            .count()
            == 4,
        "{seen:#?}"
    );
    let check = seen
        .iter()
        .map(|l| l.trim())
        .find(|l| l.contains(" check -c "))
        .expect("a check command")
        .to_string();
    assert!(
        !check.starts_with("torii "),
        "not on a cargo user's PATH: {check}"
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &check])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{check}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !entries(&tmp).is_empty(),
        "the demo's folder exists while it runs"
    );

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the demo stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(entries(&tmp), Vec::<String>::new(), "left behind");
}

#[tokio::test]
async fn a_demo_that_cannot_start_says_what_to_do_and_leaves_nothing() {
    let tmp = TempDir::new("demo-tmp");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tokio::time::timeout(PATIENCE * 3, demo(&tmp, &addr).output())
        .await
        .expect("the demo gives up")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&addr) && stderr.contains("--tls-address"),
        "{stderr}"
    );
    assert_eq!(entries(&tmp), Vec::<String>::new(), "left behind");
}
