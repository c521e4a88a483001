//! The machine and its processes: cores and memory, the operator's resident memory, the CPU
//! each process of the control plane, kwok and podium used.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub fn machine() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    json!({"cores": cores, "memory_gib": mem_gib, "cpu": cpu})
}

pub fn rss_peak_mib(pid: u32) -> f64 {
    proc_status_mib(pid, "VmHWM:")
}

/// A line of /proc/<pid>/status given in kB, in MiB to one decimal (0 when unreadable).
pub fn proc_status_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| (kib / 1024.0 * 10.0).round() / 10.0)
}

/// The operator's resident memory once a second, to show when its peak happens.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Value>>,
}

impl RssSampler {
    pub fn start(pid: u32, start: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = vec![];
            while !done.load(Ordering::SeqCst) {
                let t = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
                samples.push(json!([t, proc_status_mib(pid, "VmRSS:")]));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            samples
        });
        Self { stop, task }
    }

    /// `[seconds since the operator started, MiB]` pairs.
    pub async fn stop(self) -> Vec<Value> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap_or_default()
    }
}

/// The processes of the control plane, kwok and podium: the machine's CPU while converging.
pub const PROFILED: [&str; 7] = [
    "kube-apiserver",
    "etcd",
    "kube-scheduler",
    "kube-controller",
    "kwok",
    "podium",
    "bench",
];

/// CPU seconds (user and system) used so far by the processes named in [`PROFILED`], summed by
/// name (`/proc/<pid>/comm`, which the kernel cuts to 15 bytes).
pub fn cpu_seconds_by_process() -> BTreeMap<String, f64> {
    let ticks: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let Some(name) = PROFILED.iter().find(|n| comm.trim().starts_with(**n)) else {
            continue;
        };
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let cpu: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
            .sum();
        *out.entry(name.to_string()).or_insert(0.0) += cpu / ticks;
    }
    out
}

/// The cores each process of [`PROFILED`] used on average since `before` was taken at `start`
/// (a process that started since counts from its start).
pub fn cpu_seconds_since(before: &BTreeMap<String, f64>, start: Instant) -> Value {
    let seconds = start.elapsed().as_secs_f64();
    let now = cpu_seconds_by_process();
    let cores: serde_json::Map<String, Value> = now
        .iter()
        .map(|(name, cpu)| {
            let used = cpu - before.get(name).copied().unwrap_or(0.0);
            (
                name.clone(),
                json!((used.max(0.0) / seconds * 100.0).round() / 100.0),
            )
        })
        .collect();
    Value::Object(cores)
}
