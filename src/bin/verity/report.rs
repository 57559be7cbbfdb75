//! The results of `verity bench`: the table, the JSON file and the charts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde_json::{json, Map, Value};
use verity::Hash;

use super::bench::{Config, Workload};

/// One figure of one workload on one backend.
#[derive(Debug, Clone)]
pub(crate) struct Metric {
    pub(crate) workload: Workload,
    /// Its key in the JSON file.
    pub(crate) key: String,
    /// Its label in the table.
    pub(crate) label: String,
    /// `None`: the backend cannot measure it.
    pub(crate) value: Option<f64>,
}

impl Metric {
    pub(crate) fn new(workload: Workload, key: &str, label: &str, value: f64) -> Metric {
        Metric::opt(workload, key, label, Some(value))
    }

    pub(crate) fn opt(workload: Workload, key: &str, label: &str, value: Option<f64>) -> Metric {
        Metric {
            workload,
            key: key.to_string(),
            label: label.to_string(),
            value: value.filter(|v| v.is_finite()),
        }
    }
}

/// Series for the charts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Series {
    /// Updates/s of each block of `blocks`.
    pub(crate) block_rate: Vec<f64>,
    /// Commit latencies of `blocks` in ms, ascending.
    pub(crate) latency_ms: Vec<f64>,
    /// `(version, bytes on disk)`.
    pub(crate) disk_bytes: Vec<(u64, u64)>,
}

/// Everything one backend measured.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) name: &'static str,
    /// Its trie family: roots and proofs are compared only within one.
    pub(crate) family: &'static str,
    pub(crate) settings: String,
    pub(crate) metrics: Vec<Metric>,
    pub(crate) series: Series,
    /// `roots[v - 1]`: the root of version `v`.
    pub(crate) roots: Vec<Hash>,
    /// A digest of the bytes of the `prove` workload's latest proofs.
    pub(crate) proof_digest: Option<Hash>,
}

impl Run {
    /// A digest of every version's root, in order.
    pub(crate) fn roots_digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for r in &self.roots {
            h.update(r);
        }
        h.finalize().to_hex().to_string()
    }

    fn value(&self, workload: Workload, key: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.workload == workload && m.key == key)
            .and_then(|m| m.value)
    }
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn name(w: Workload) -> &'static str {
    match w {
        Workload::Load => "load",
        Workload::Blocks => "blocks",
        Workload::Executor => "executor",
        Workload::Read => "read",
        Workload::Prove => "prove",
        Workload::History => "history",
    }
}

/// Prints the table: each figure per backend, and the first backend's
/// figure divided by each other's.
pub(crate) fn table(runs: &[Run]) {
    let Some(first) = runs.first() else { return };
    let label_width = first
        .metrics
        .iter()
        .map(|m| m.label.len() + 10)
        .max()
        .unwrap_or(20);
    let mut header = format!("{:<label_width$}", "figure");
    for r in runs {
        header += &format!(" {:>12}", r.name);
    }
    for r in &runs[1..] {
        header += &format!(" {:>16}", format!("{}/{}", first.name, r.name));
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for m in &first.metrics {
        let mut line = format!(
            "{:<label_width$}",
            format!("{:<9} {}", name(m.workload), m.label)
        );
        let values: Vec<Option<f64>> = runs.iter().map(|r| r.value(m.workload, &m.key)).collect();
        for v in &values {
            line += &format!(" {:>12}", fmt(*v));
        }
        for v in &values[1..] {
            let ratio = match (m.value, v) {
                (Some(a), Some(b)) if *b != 0.0 => Some(a / b),
                _ => None,
            };
            line += &format!(
                " {:>16}",
                ratio.map_or("n/a".into(), |r| format!("{r:.2}x"))
            );
        }
        println!("{line}");
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "kernel": kernel,
    })
}

/// Writes the results as JSON: one object per backend and workload, with
/// the ratio of the first backend's figures to this one's.
pub(crate) fn json(path: &Path, c: &Config, runs: &[Run]) -> Result<()> {
    let mut results = Vec::new();
    let first = runs.first();
    for r in runs {
        let mut workloads: Vec<Workload> = Vec::new();
        for m in &r.metrics {
            if !workloads.contains(&m.workload) {
                workloads.push(m.workload);
            }
        }
        for w in workloads {
            let mut metrics = Map::new();
            let mut ratios = Map::new();
            for m in r.metrics.iter().filter(|m| m.workload == w) {
                metrics.insert(m.key.clone(), json!({ "value": m.value, "label": m.label }));
                let ratio = match (first.and_then(|f| f.value(w, &m.key)), m.value) {
                    (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                    _ => None,
                };
                ratios.insert(m.key.clone(), json!(ratio));
            }
            results.push(json!({
                "backend": r.name,
                "workload": name(w),
                "metrics": metrics,
                "ratio_first_to_this": ratios,
            }));
        }
    }
    let doc = json!({
        "seed": c.seed,
        "keys": c.keys,
        "blocks": c.blocks,
        "block_size": c.block_size,
        "value_size": c.value_size,
        "zipf": c.zipf,
        "threads": c.threads,
        "cache_mb": c.cache_mb,
        "direct_io": c.direct_io,
        "retain": c.retain,
        "machine": machine(),
        "backends": runs.iter().map(|r| json!({
            "name": r.name,
            "family": r.family,
            "settings": r.settings,
            "versions": r.roots.len(),
            "final_root": r.roots.last().map(|h| blake3::Hash::from(*h).to_hex().to_string()),
            "roots_digest": r.roots_digest(),
        })).collect::<Vec<_>>(),
        // Within each trie family (roots of different families differ by
        // design).
        "roots_agree": runs.iter().all(|r| runs
            .iter()
            .filter(|o| o.family == r.family)
            .all(|o| o.roots == r.roots)),
        "results": results,
        "series": runs.iter().map(|r| json!({
            "backend": r.name,
            "block_updates_per_s": r.series.block_rate,
            "commit_latency_ms_sorted": r.series.latency_ms,
            "disk_bytes_by_version": r.series.disk_bytes,
        })).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&doc)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// One line chart with a line per backend.
fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[(&str, Vec<(f64, f64)>)],
) -> Result<()> {
    let x_max = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let y_max = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.05;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_err)?;
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(plot_err)?;
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        c.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(plot_err)?
        .label(*name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e}")
}

/// Writes `throughput.svg` (updates/s per block), `latency_cdf.svg`
/// (commit latency) and `disk_bytes.svg` (bytes on disk over versions).
pub(crate) fn plots(dir: &Path, runs: &[Run]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let rate: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|r| {
            (
                r.name,
                r.series
                    .block_rate
                    .iter()
                    .enumerate()
                    .map(|(i, v)| ((i + 1) as f64, *v))
                    .collect(),
            )
        })
        .collect();
    chart(
        &dir.join("throughput.svg"),
        "blocks: throughput per block",
        "block",
        "updates/s",
        &rate,
    )?;
    let cdf: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|r| {
            let n = r.series.latency_ms.len().max(1) as f64;
            (
                r.name,
                r.series
                    .latency_ms
                    .iter()
                    .enumerate()
                    .map(|(i, ms)| (*ms, (i + 1) as f64 / n))
                    .collect(),
            )
        })
        .collect();
    chart(
        &dir.join("latency_cdf.svg"),
        "blocks: commit latency (commit call to durable)",
        "ms",
        "fraction of blocks",
        &cdf,
    )?;
    let disk: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .filter(|r| !r.series.disk_bytes.is_empty())
        .map(|r| {
            (
                r.name,
                r.series
                    .disk_bytes
                    .iter()
                    .map(|(v, b)| (*v as f64, *b as f64 / (1 << 20) as f64))
                    .collect(),
            )
        })
        .collect();
    chart(
        &dir.join("disk_bytes.svg"),
        "bytes on disk over versions",
        "version",
        "MiB",
        &disk,
    )
}

/// The roots an earlier run wrote with `--json`, to check a run's against
/// (`--check-roots`).
pub(crate) struct EarlierRoots {
    /// The file.
    pub(crate) path: PathBuf,
    /// Per backend: its name, versions and roots digest.
    backends: Vec<(String, u64, String)>,
}

impl EarlierRoots {
    /// Reads `path`; an error if it is not a result file of a run with
    /// the seed and sizes of `c`.
    pub(crate) fn read(path: &Path, c: &Config) -> Result<EarlierRoots> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a result file of verity bench", path.display()))?;
        let same = [
            ("seed", json!(c.seed)),
            ("keys", json!(c.keys)),
            ("blocks", json!(c.blocks)),
            ("block_size", json!(c.block_size)),
            ("value_size", json!(c.value_size)),
            ("zipf", json!(c.zipf)),
        ];
        for (key, value) in same {
            if doc[key] != value {
                bail!(
                    "{} comes from a run with {key} {}, this one has {value}: the roots cannot be compared",
                    path.display(),
                    doc[key]
                );
            }
        }
        let mut backends = Vec::new();
        for b in doc["backends"].as_array().into_iter().flatten() {
            let (Some(name), Some(versions), Some(digest)) = (
                b["name"].as_str(),
                b["versions"].as_u64(),
                b["roots_digest"].as_str(),
            ) else {
                bail!(
                    "{}: a backend without name, versions or roots digest",
                    path.display()
                );
            };
            backends.push((name.to_string(), versions, digest.to_string()));
        }
        Ok(EarlierRoots {
            path: path.to_path_buf(),
            backends,
        })
    }

    /// Checks that `run` computed the same roots as the earlier run of
    /// its backend.
    pub(crate) fn check(&self, run: &Run) -> Result<()> {
        let Some((_, versions, digest)) = self.backends.iter().find(|b| b.0 == run.name) else {
            bail!("{} has no roots of {}", self.path.display(), run.name);
        };
        if *versions != run.roots.len() as u64 {
            bail!(
                "{} has {versions} versions of {}, this run {}: run the same workloads",
                self.path.display(),
                run.name,
                run.roots.len()
            );
        }
        if *digest != run.roots_digest() {
            bail!(
                "ROOTS DIFFER: {} computed other roots than in {} from the same seed",
                run.name,
                self.path.display()
            );
        }
        Ok(())
    }
}
