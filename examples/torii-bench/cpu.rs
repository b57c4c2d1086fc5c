//! CPU time of other processes, from /proc/PID/stat.

use std::collections::BTreeMap;

use crate::Error;

/// Named groups of processes (`NAME=PID[,PID...]`).
#[derive(Debug, Clone, Default)]
pub struct Groups(Vec<(String, Vec<u32>)>);

impl Groups {
    pub fn parse(specs: &[String]) -> Result<Self, Error> {
        let mut groups = Vec::new();
        for spec in specs {
            let (name, pids) = spec
                .split_once('=')
                .ok_or_else(|| format!("--cpu {spec}: expected NAME=PID[,PID...]"))?;
            let pids = pids
                .split(',')
                .map(|p| p.trim().parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--cpu {spec}: {e}"))?;
            groups.push((name.to_string(), pids));
        }
        Ok(Groups(groups))
    }

    /// utime + stime, in clock ticks, summed over each group's processes
    /// (every thread of a process is included). A process that is gone
    /// counts as 0, which the caller sees as a nonsense difference.
    pub fn ticks(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .map(|(name, pids)| (name.clone(), pids.iter().map(|&p| ticks(p)).sum()))
            .collect()
    }
}

fn ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces; fields after it are plain.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// `{"NAME": ticks, ...}` for after − before.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> serde_json::Map<String, serde_json::Value> {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or(0);
            (k.clone(), a.saturating_sub(b).into())
        })
        .collect()
}
