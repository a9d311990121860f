//! The figures of one run, printed as a plain-text table or as one JSON object; latency
//! histograms shared by many connections; readings of a process from `/proc`.

use hdrhistogram::Histogram;
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// One row: a JSON key, a label for the table, the value and its text.
#[derive(Debug)]
struct Row {
    key: String,
    label: String,
    value: Value,
    text: String,
}

/// The figures of one run, in the order they are added.
#[derive(Debug)]
pub struct Report {
    mode: &'static str,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(mode: &'static str) -> Report {
        Report { mode, rows: Vec::new(), notes: Vec::new() }
    }

    fn push(&mut self, key: &str, label: &str, value: Value, text: String) {
        self.rows.push(Row { key: key.to_owned(), label: label.to_owned(), value, text });
    }

    pub fn int(&mut self, key: &str, label: &str, v: u64) {
        self.push(key, label, Value::from(v), group(v));
    }

    /// A float shown with `decimals` places.
    pub fn num(&mut self, key: &str, label: &str, v: f64, decimals: usize) {
        let text = format!("{v:.decimals$}");
        let rounded: f64 = text.parse().unwrap_or(v);
        let text = match text.split_once('.') {
            Some((int, frac)) if v >= 1000.0 => format!("{}.{frac}", group(int.parse().unwrap_or(0))),
            None if v >= 1000.0 => group(text.parse().unwrap_or(0)),
            _ => text,
        };
        self.push(key, label, Value::from(rounded), text);
    }

    pub fn text(&mut self, key: &str, label: &str, v: &str) {
        self.push(key, label, Value::from(v), v.to_owned());
    }

    /// p50, p99, p99.9 and max of a histogram of microseconds, in milliseconds.
    pub fn latency(&mut self, key: &str, label: &str, h: &Histogram<u64>) {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            self.text(key, label, "no samples");
            return;
        }
        self.num(&format!("{key}_p50_ms"), &format!("{label} p50 (ms)"), ms(h.value_at_quantile(0.50)), 3);
        self.num(&format!("{key}_p99_ms"), &format!("{label} p99 (ms)"), ms(h.value_at_quantile(0.99)), 3);
        self.num(
            &format!("{key}_p999_ms"),
            &format!("{label} p99.9 (ms)"),
            ms(h.value_at_quantile(0.999)),
            3,
        );
        self.num(&format!("{key}_max_ms"), &format!("{label} max (ms)"), ms(h.max()), 3);
        self.num(&format!("{key}_mean_ms"), &format!("{label} mean (ms)"), h.mean() / 1000.0, 3);
    }

    /// A line printed under the table (and as `notes` in JSON).
    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    pub fn print(&self, url: &str, json: bool) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            let mut m = Map::new();
            m.insert("mode".into(), Value::from(self.mode));
            m.insert("url".into(), Value::from(url));
            for r in &self.rows {
                m.insert(r.key.clone(), r.value.clone());
            }
            m.insert("notes".into(), Value::from(self.notes.clone()));
            writeln!(out, "{}", Value::Object(m))?;
            return Ok(());
        }
        writeln!(out, "herald bench {} against {url}", self.mode)?;
        let width = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
        let vwidth = self.rows.iter().map(|r| r.text.len()).max().unwrap_or(0);
        for r in &self.rows {
            writeln!(out, "  {:<width$}  {:>vwidth$}", r.label, r.text)?;
        }
        for n in &self.notes {
            writeln!(out, "  note: {n}")?;
        }
        Ok(())
    }
}

/// `1234567` → `1,234,567`.
fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency histogram in microseconds (1 µs .. 10 min, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Latency histograms shared by many connections: a few shards behind plain mutexes (held for
/// one `record`, never across an `.await`), instead of one ~100 KiB histogram per connection.
#[derive(Debug)]
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latencies {
    pub fn new() -> Latencies {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) * 4;
        Latencies { shards: (0..n).map(|_| Mutex::new(histogram())).collect() }
    }

    /// Records `micros` from the connection numbered `conn`.
    pub fn record(&self, conn: usize, micros: u64) {
        let mut h = self.shards[conn % self.shards.len()].lock().unwrap_or_else(|e| e.into_inner());
        h.saturating_record(micros.max(1));
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for s in &self.shards {
            let h = s.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds on both sides: adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }
}

/// Nanoseconds since `base`, as `u64`.
pub fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) a process has used, in seconds, from `/proc/<pid>/stat`.
/// Assumes the usual 100 clock ticks per second.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // After ')' come state (field 3), …; utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Busy CPU time of the whole machine, in seconds (`/proc/stat`: all but idle and iowait).
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    Some((total - idle) as f64 / 100.0)
}

/// CPU time of the server (if its pid is known), of this process and of the whole machine,
/// from one moment on: the machine's share tells whether other work disturbed a run.
#[derive(Debug)]
pub struct CpuMeter {
    pid: Option<u32>,
    server0: Option<f64>,
    self0: Option<f64>,
    machine0: Option<f64>,
    t0: Instant,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            server0: pid.and_then(cpu_secs),
            self0: cpu_secs(std::process::id()),
            machine0: machine_busy_secs(),
            t0: Instant::now(),
        }
    }

    /// The CPU used since `start`.
    pub fn finish(&self) -> CpuUse {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        let server_secs = match (self.pid, self.server0) {
            (Some(pid), Some(s0)) => cpu_secs(pid).map(|s1| s1 - s0),
            _ => None,
        };
        let generator_secs = self.self0.and_then(|g0| cpu_secs(std::process::id()).map(|g1| g1 - g0));
        let machine_secs = self.machine0.and_then(|m0| machine_busy_secs().map(|m1| m1 - m0));
        CpuUse { wall, server_secs, generator_secs, machine_secs }
    }
}

/// CPU seconds used over `wall` seconds.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub wall: f64,
    pub server_secs: Option<f64>,
    pub generator_secs: Option<f64>,
    /// Every process of the machine, these two included.
    pub machine_secs: Option<f64>,
}

impl CpuUse {
    /// Cores used by every other process of the machine (other work disturbing the run).
    pub fn others_cores(&self) -> Option<f64> {
        let m = self.machine_secs?;
        let others = m - self.server_secs.unwrap_or(0.0) - self.generator_secs.unwrap_or(0.0);
        Some((others / self.wall).max(0.0))
    }

    /// Adds the CPU use in cores (CPU seconds per wall second).
    pub fn add_to(&self, r: &mut Report) {
        if let Some(s) = self.server_secs {
            r.num("server_cpu_cores", "server CPU (cores)", s / self.wall, 2);
        }
        if let Some(g) = self.generator_secs {
            r.num("generator_cpu_cores", "generator CPU (cores)", g / self.wall, 2);
        }
        if let Some(m) = self.machine_secs {
            let others = m - self.server_secs.unwrap_or(0.0) - self.generator_secs.unwrap_or(0.0);
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            r.num("machine_busy_cores", &format!("machine busy (cores of {cores})"), m / self.wall, 2);
            if self.server_secs.is_some() {
                r.num(
                    "other_cpu_cores",
                    "  of which other processes (cores)",
                    (others / self.wall).max(0.0),
                    2,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_in_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
        let mut r = Report::new("t");
        r.num("k", "l", 201345.26, 1);
        assert_eq!(r.rows[0].text, "201,345.3");
        assert_eq!(r.rows[0].value, Value::from(201345.3));
    }

    #[test]
    fn own_cpu_and_rss_are_readable() {
        assert!(cpu_secs(std::process::id()).is_some());
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert!(machine_busy_secs().is_some_and(|s| s > 0.0));
    }
}
