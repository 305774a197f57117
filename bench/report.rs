//! The figures the benchmark prints: each case's runs (median, min, max,
//! CPU per record) and the table at the end.

pub struct Stats {
    pub name: String,
    pub values: Vec<f64>,
    pub unit: &'static str,
    pub target: String,
    /// CPU seconds per 10,000 records, per run (empty: not measured).
    pub cpu: Vec<f64>,
}

/// A drain's figures: records/s and CPU seconds per 10,000 records.
pub struct Drained {
    pub rate: f64,
    pub cpu_per_10k: f64,
}

/// CPU seconds (user + system, every thread) `pid` used so far (`None`: this process).
pub fn cpu_secs(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    ticks.iter().sum::<f64>() / 100.0 // USER_HZ
}

pub fn per_10k(cpu: f64, records: f64) -> f64 {
    cpu / records * 10_000.0
}

impl Stats {
    pub fn median(&self) -> f64 {
        let mut v = self.values.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }
    pub fn min(&self) -> f64 {
        self.values.iter().cloned().fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.values.iter().cloned().fold(0.0, f64::max)
    }
    pub fn cpu(&self) -> Option<f64> {
        let mut v = self.cpu.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.get(v.len() / 2).copied()
    }
    pub fn of(name: String, drains: Vec<Drained>, target: &str) -> Stats {
        Stats {
            name,
            values: drains.iter().map(|d| d.rate).collect(),
            unit: "records/s",
            target: target.into(),
            cpu: drains.iter().map(|d| d.cpu_per_10k).collect(),
        }
    }
}

pub struct Table {
    pub rows: Vec<(Stats, Option<f64>)>,
}

impl Table {
    pub fn add(&mut self, stats: Stats, reference: Option<f64>) {
        let ratio = reference.map(|r| stats.median() / r);
        println!(
            "  {:<48} median {:>10.0} {:<10} (min {:.0}, max {:.0}){}{}",
            stats.name,
            stats.median(),
            stats.unit,
            stats.min(),
            stats.max(),
            ratio.map(|r| format!("  ratio {r:.2}")).unwrap_or_default(),
            stats.cpu().map(|c| format!("  CPU {c:.3} s/10k")).unwrap_or_default()
        );
        self.rows.push((stats, ratio));
    }

    pub fn print(&self) {
        println!("\n| case | median | min | max | unit | ratio to (1) | CPU s / 10k records | target |");
        println!("|---|---:|---:|---:|---|---:|---:|---|");
        for (s, ratio) in &self.rows {
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |",
                s.name,
                s.median(),
                s.min(),
                s.max(),
                s.unit,
                ratio.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into()),
                s.cpu().map(|c| format!("{c:.3}")).unwrap_or_else(|| "-".into()),
                s.target
            );
        }
    }
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}
