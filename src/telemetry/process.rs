//! The process metrics Prometheus users expect from every exporter
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`)
//! and `torii_build_info{version}`, read from /proc when `/metrics` is
//! scraped: nothing is sampled in between.

use std::fmt::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// When the process started (close enough: when its first metrics
/// registry was made, at startup).
static START: OnceLock<f64> = OnceLock::new();

/// Notes the start time; called when the registry is made.
pub fn mark_start() {
    START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    });
}

/// Clock ticks per second, the unit of /proc's CPU times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system; it takes no pointers
    // and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn page_size() -> f64 {
    // SAFETY: as above.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as f64
    } else {
        4096.0
    }
}

/// (user + system CPU seconds, resident bytes), from /proc/self.
fn cpu_and_rss() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields count from after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line; rss is 24.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss: f64 = fields.get(21)?.parse().ok()?;
    Some(((utime + stime) / clock_ticks(), rss * page_size()))
}

fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The metrics in the text exposition format, one family after another.
pub fn encode(out: &mut String) {
    let mut family = |name: &str, kind: &str, help: &str, sample: &str| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample}\n"
        );
    };
    if let Some((cpu, rss)) = cpu_and_rss() {
        family(
            "process_cpu_seconds",
            "counter",
            "Total user and system CPU time spent in seconds.",
            &format!("process_cpu_seconds_total {cpu}"),
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            &format!("process_resident_memory_bytes {rss}"),
        );
    }
    if let Some(n) = open_fds() {
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            &format!("process_open_fds {n}"),
        );
    }
    if let Some(n) = max_fds() {
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            &format!("process_max_fds {n}"),
        );
    }
    if let Some(start) = START.get() {
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            &format!("process_start_time_seconds {start}"),
        );
    }
    family(
        "torii_build_info",
        "gauge",
        "The running torii's version (always 1).",
        &format!(
            "torii_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_metrics_are_read() {
        super::mark_start();
        let mut out = String::new();
        super::encode(&mut out);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "torii_build_info{version=",
        ] {
            assert!(out.contains(name), "{name} missing:\n{out}");
        }
        let rss: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1_000_000.0, "a process holds more than 1 MB: {rss}");
    }
}
