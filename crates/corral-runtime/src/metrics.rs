//! CPU and memory of process trees, measured when somebody asks and never otherwise: one scan
//! of `/proc` per request, no timer. CPU % is the share of one core used since the previous
//! request for the same process, by any client (or, the first time, since the process started).
//! What is kept between requests is by PID, not by the caller's key (a unit's name): at
//! thousands of units a copy of every name in two maps was a fifth of a KiB per unit.
//!
//! The API's meter shares a sample for a second ([`Meter::sharing`]): the kernel counts CPU in
//! 10 ms ticks, so a rate over a few milliseconds (two `ps` in a row, or `ps` beside the TUI and
//! the dashboard) is noise, and a scan reads a file per process on the machine (~6 ms for 500).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::proctable;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Percent of one core, over the time since the last measurement.
    pub cpu_percent: f64,
    /// Resident memory of the whole tree.
    pub rss_bytes: u64,
    /// Processes in the tree.
    pub processes: usize,
}

/// Remembers the last CPU reading per process, to turn tick counts into a rate.
#[derive(Clone, Default)]
pub struct Meter {
    last: Arc<Mutex<HashMap<u32, Reading>>>,
    /// How long a sample answers later requests (zero: every request scans).
    share_for: Duration,
    sample: Arc<Mutex<Option<Sample>>>,
}

/// A root process's CPU at a moment: its start time (a PID used again is another process),
/// its tree's ticks, when.
type Reading = (u64, u64, Instant);

/// One scan's answers, by the root pid it was asked for (`None`: no such process then).
struct Sample {
    at: Instant,
    usage: HashMap<u32, Option<Usage>>,
}

struct Stat {
    zombie: bool,
    ppid: i32,
    ticks: u64,
    rss_pages: u64,
    start: u64,
}

fn read(pid: i32) -> Option<Stat> {
    let text = proctable::stat_text(pid)?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields counted from `state` (field 3 of stat) at index 0.
    Some(Stat {
        zombie: *f.first()? == "Z",
        ppid: f.get(1)?.parse().ok()?,
        ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        start: f.get(19)?.parse().ok()?,
        rss_pages: f.get(21)?.parse().ok()?,
    })
}

impl Meter {
    /// A meter whose sample answers requests for `share_for` after it was taken, as long as it
    /// covers every `(key, root pid)` asked for (a new or restarted process makes a new scan).
    pub fn sharing(share_for: Duration) -> Meter {
        Meter {
            share_for,
            ..Meter::default()
        }
    }

    /// Usage of each `(key, root pid)`'s process tree.
    pub fn measure(&self, roots: &[(String, u32)]) -> HashMap<String, Usage> {
        if roots.is_empty() {
            return HashMap::new();
        }
        if self.share_for.is_zero() {
            return self.scan(roots);
        }
        // Held across the scan: requests arriving meanwhile wait for it instead of scanning too.
        let mut sample = self.sample.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sample.as_ref().filter(|s| s.at.elapsed() < self.share_for) {
            let covered = roots.iter().all(|(_, pid)| s.usage.contains_key(pid));
            if covered {
                return roots
                    .iter()
                    .filter_map(|(key, pid)| Some((key.clone(), (*s.usage.get(pid)?)?)))
                    .collect();
            }
        }
        let at = Instant::now();
        let out = self.scan(roots);
        let usage = roots
            .iter()
            .map(|(key, pid)| (*pid, out.get(key).copied()))
            .collect();
        *sample = Some(Sample { at, usage });
        out
    }

    fn scan(&self, roots: &[(String, u32)]) -> HashMap<String, Usage> {
        // One read of `stat` per process: it has the tree links, the CPU and the memory.
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return HashMap::new();
        };
        let stats: HashMap<i32, Stat> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| Some((pid, read(pid)?)))
            .filter(|(_, s)| !s.zombie)
            .collect();
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for (pid, s) in &stats {
            children.entry(s.ppid).or_default().push(*pid);
        }
        // SAFETY: sysconf only reads configuration values.
        let (hz, page) = unsafe {
            (
                nix::libc::sysconf(nix::libc::_SC_CLK_TCK).max(1) as f64,
                nix::libc::sysconf(nix::libc::_SC_PAGESIZE).max(1) as u64,
            )
        };
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = HashMap::new();
        for (key, root) in roots {
            let root = *root as i32;
            let Some(root_stat) = stats.get(&root) else {
                continue;
            };
            let tree: Vec<i32> = proctable::tree(&children, root)
                .into_iter()
                .filter(|p| stats.contains_key(p))
                .collect();
            let ticks: u64 = tree.iter().map(|p| stats[p].ticks).sum();
            let rss: u64 = tree.iter().map(|p| stats[p].rss_pages).sum::<u64>() * page;
            let cpu = match last.get(&(root as u32)) {
                Some((start, t0, at)) if *start == root_stat.start && ticks >= *t0 && now > *at => {
                    (ticks - t0) as f64 / hz / (now - *at).as_secs_f64() * 100.0
                }
                // First look (or a process of the tree ended): the average over its life.
                _ => {
                    let age = proctable::age(root_stat.start).unwrap_or(Duration::ZERO);
                    if age.is_zero() {
                        0.0
                    } else {
                        ticks as f64 / hz / age.as_secs_f64() * 100.0
                    }
                }
            };
            last.insert(root as u32, (root_stat.start, ticks, now));
            out.insert(
                key.clone(),
                Usage {
                    cpu_percent: (cpu * 10.0).round() / 10.0,
                    rss_bytes: rss,
                    processes: tree.len(),
                },
            );
        }
        // Forget readings nobody has asked about for an hour (ended processes, mostly).
        last.retain(|_, (_, _, at)| now.duration_since(*at) < Duration::from_secs(3600));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_busy_tree() {
        // This test process: some CPU already, real memory.
        let me = std::process::id();
        let meter = Meter::default();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let u = meter.measure(&[("me".into(), me)]);
        let me_usage = u["me"];
        assert!(me_usage.rss_bytes > 1 << 20, "{me_usage:?}");
        assert!(me_usage.processes >= 1);
        assert!(me_usage.cpu_percent > 0.0, "{me_usage:?} {x}");
        assert!(meter.measure(&[("gone".into(), u32::MAX / 2)]).is_empty());
    }

    #[test]
    fn a_shared_sample_answers_what_it_covers_and_no_more() {
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let meter = Meter::sharing(Duration::from_secs(3600));
        let first = meter.measure(&[("me".into(), me), ("gone".into(), u32::MAX / 2)]);
        let again = meter.measure(&[("me".into(), me)]);
        assert_eq!(
            first["me"], again["me"],
            "the sample answers within its time"
        );
        assert!(!again.contains_key("gone"));
        // A key with another pid (a restart), or a key the sample lacks, makes a new scan.
        let moved = meter.measure(&[("me".into(), parent)]);
        assert!(
            moved["me"].processes > first["me"].processes,
            "{moved:?} {first:?}"
        );
        let more = meter.measure(&[("me".into(), parent), ("child".into(), me)]);
        assert!(more["child"].processes >= 1, "{more:?}");
        // Without sharing every request scans: the RSS of a growing process moves.
        let fresh = Meter::default();
        let before = fresh.measure(&[("me".into(), me)])["me"].rss_bytes;
        let grown = vec![1u8; 64 << 20];
        let after = fresh.measure(&[("me".into(), me)])["me"].rss_bytes;
        assert!(
            after > before + (32 << 20),
            "{before} → {after} ({})",
            grown.len()
        );
    }
}
