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

/// At most this many roots (asked for, or new since a shared sample) are measured on their
/// own; more make a scan of every process.
const FEW_NEW: usize = 16;

/// One scan's answers, by the root pid it was asked for (`None`: no such process then).
struct Sample {
    at: Instant,
    usage: HashMap<u32, Option<Usage>>,
}

#[derive(Clone, Copy)]
struct Stat {
    pid: i32,
    ppid: i32,
    ticks: u64,
    rss_pages: u64,
    start: u64,
}

/// The fields of `/proc/PID/stat` a measure needs; none for a zombie (it only waits to be
/// reaped) or a process gone meanwhile. Parsed in place: no allocation per process on the
/// machine.
fn read(pid: i32) -> Option<Stat> {
    let mut buf = [0u8; proctable::STAT_MAX];
    let mut f = proctable::stat_fields(pid, &mut buf)?.split(' ');
    // Fields counted from `state` (field 3 of stat) at index 0.
    if f.next()? == "Z" {
        return None;
    }
    let ppid = f.next()?.parse().ok()?;
    let mut f = f.skip(9);
    let ticks = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    let start = f.nth(6)?.parse().ok()?;
    let rss_pages = f.nth(1)?.parse().ok()?;
    Some(Stat {
        pid,
        ppid,
        ticks,
        rss_pages,
        start,
    })
}

/// Every live process's stat. The reads are shared among threads, one a core, each with at
/// least 128 processes (a thread costs tens of µs; 128 reads ~1 ms): each read is a file
/// opened, read and closed (~9 µs here), and they run side by side in the kernel — at 5,000
/// processes two threads took a scan from 48 to 23 ms on two cores; a new sample with 200
/// services (~275 processes) went from 4.4–4.7 to 3.3–3.6 ms.
fn read_all() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(pids.len() / 128)
        .clamp(1, 8);
    fn read_part(part: &[i32]) -> Vec<Stat> {
        part.iter().filter_map(|&p| read(p)).collect()
    }
    if threads == 1 {
        return read_part(&pids);
    }
    let per = pids.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = pids.chunks(per);
        let here = parts.next().unwrap_or_default();
        // The other parts on threads of their own. Where the system has no thread to give (its
        // process limit reached — the moment someone asks what runs), a part is read here: a
        // `spawn` that panics would take the supervisor's memory watch down with it.
        let others: Vec<Result<_, &[i32]>> = parts
            .map(|part| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || read_part(part))
                    .map_err(|_| part)
            })
            .collect();
        let mut all = read_part(here);
        for other in others {
            match other {
                Ok(thread) => all.extend(thread.join().unwrap_or_default()),
                Err(part) => all.extend(read_part(part)),
            }
        }
        all
    })
}

impl Meter {
    /// A meter whose sample answers requests for `share_for` after it was taken, as long as it
    /// covers every root pid asked for (a new or restarted process makes a new scan).
    pub fn sharing(share_for: Duration) -> Meter {
        Meter {
            share_for,
            ..Meter::default()
        }
    }

    /// Usage of each root pid's process tree, in the order asked (none where no pid is given,
    /// or the process is gone).
    pub fn measure(&self, roots: &[Option<u32>]) -> Vec<Option<Usage>> {
        if roots.iter().all(Option::is_none) {
            return vec![None; roots.len()];
        }
        if self.share_for.is_zero() {
            return self.scan(roots);
        }
        // Held across the scan: requests arriving meanwhile wait for it instead of scanning too.
        let mut sample = self.sample.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sample.as_mut().filter(|s| s.at.elapsed() < self.share_for) {
            let missing: Vec<u32> = roots
                .iter()
                .flatten()
                .filter(|pid| !s.usage.contains_key(pid))
                .copied()
                .collect();
            // A few processes new since the sample (units just started): their trees alone are
            // measured and join it. A whole scan for each made polling a new instance among
            // thousands read every process on the machine each time.
            let added = match missing.len() {
                0 => Some(Vec::new()),
                n if n <= FEW_NEW => self.scan_trees(&missing),
                _ => None,
            };
            if let Some(added) = added {
                s.usage.extend(missing.into_iter().zip(added));
                return roots
                    .iter()
                    .map(|pid| *s.usage.get(pid.as_ref()?)?)
                    .collect();
            }
        }
        let at = Instant::now();
        // A few roots (one unit asked about): their trees alone, not every process on the
        // machine; the sample then covers them only, and a request for more scans.
        let pids: Vec<u32> = roots.iter().flatten().copied().collect();
        let alone = (pids.len() <= FEW_NEW)
            .then(|| self.scan_trees(&pids))
            .flatten();
        let out = match alone {
            Some(found) => {
                let mut found = found.into_iter();
                roots
                    .iter()
                    .map(|r| r.and_then(|_| found.next().flatten()))
                    .collect()
            }
            None => self.scan(roots),
        };
        let usage = roots
            .iter()
            .zip(&out)
            .filter_map(|(pid, u)| Some(((*pid)?, *u)))
            .collect();
        *sample = Some(Sample { at, usage });
        out
    }

    fn scan(&self, roots: &[Option<u32>]) -> Vec<Option<Usage>> {
        // One read of `stat` per process: it has the tree links, the CPU and the memory.
        let stats: HashMap<i32, Stat> = read_all().into_iter().map(|s| (s.pid, s)).collect();
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for (pid, s) in &stats {
            children.entry(s.ppid).or_default().push(*pid);
        }
        self.usage_of(roots, &stats, &children)
    }

    /// The trees of `roots` alone, found through the kernel's lists of each process's children
    /// (a read or two per process in them); None where the kernel keeps no such lists.
    fn scan_trees(&self, roots: &[u32]) -> Option<Vec<Option<Usage>>> {
        if !proctable::children_listed() {
            return None;
        }
        let mut stats: HashMap<i32, Stat> = HashMap::new();
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        let mut queue: Vec<i32> = roots.iter().map(|&p| p as i32).collect();
        while let Some(pid) = queue.pop() {
            if stats.contains_key(&pid) {
                continue;
            }
            let Some(stat) = read(pid) else { continue };
            stats.insert(pid, stat);
            // Gone meanwhile: no children to follow.
            let kids = proctable::children_of(pid).unwrap_or_default();
            queue.extend(&kids);
            children.insert(pid, kids);
        }
        let roots: Vec<Option<u32>> = roots.iter().map(|&p| Some(p)).collect();
        Some(self.usage_of(&roots, &stats, &children))
    }

    /// Each root's tree's usage, from the stats of its processes and their children.
    fn usage_of(
        &self,
        roots: &[Option<u32>],
        stats: &HashMap<i32, Stat>,
        children: &HashMap<i32, Vec<i32>>,
    ) -> Vec<Option<Usage>> {
        // SAFETY: sysconf only reads configuration values.
        let (hz, page) = unsafe {
            (
                nix::libc::sysconf(nix::libc::_SC_CLK_TCK).max(1) as f64,
                nix::libc::sysconf(nix::libc::_SC_PAGESIZE).max(1) as u64,
            )
        };
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        // Read once, when a first look needs it (not a file read per new process).
        let mut uptime = None;
        let out = roots
            .iter()
            .map(|root| {
                let root = (*root)? as i32;
                let root_stat = stats.get(&root)?;
                let tree: Vec<&Stat> = proctable::tree(children, root)
                    .iter()
                    .filter_map(|p| stats.get(p))
                    .collect();
                let ticks: u64 = tree.iter().map(|s| s.ticks).sum();
                let rss: u64 = tree.iter().map(|s| s.rss_pages).sum::<u64>() * page;
                let cpu = match last.get(&(root as u32)) {
                    Some((start, t0, at))
                        if *start == root_stat.start && ticks >= *t0 && now > *at =>
                    {
                        (ticks - t0) as f64 / hz / (now - *at).as_secs_f64() * 100.0
                    }
                    // First look (or a process of the tree ended): the average over its life.
                    _ => {
                        let age = uptime
                            .get_or_insert_with(proctable::uptime)
                            .map_or(Duration::ZERO, |up| proctable::age_at(root_stat.start, up));
                        if age.is_zero() {
                            0.0
                        } else {
                            ticks as f64 / hz / age.as_secs_f64() * 100.0
                        }
                    }
                };
                last.insert(root as u32, (root_stat.start, ticks, now));
                Some(Usage {
                    cpu_percent: (cpu * 10.0).round() / 10.0,
                    rss_bytes: rss,
                    processes: tree.len(),
                })
            })
            .collect();
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
        let u = meter.measure(&[Some(me), None, Some(u32::MAX / 2)]);
        let me_usage = u[0].unwrap();
        assert!(me_usage.rss_bytes > 1 << 20, "{me_usage:?}");
        assert!(me_usage.processes >= 1);
        assert!(me_usage.cpu_percent > 0.0, "{me_usage:?} {x}");
        assert_eq!(u[1..], [None, None], "no pid, and a pid of nobody");
    }

    #[test]
    fn a_shared_sample_answers_what_it_covers_and_no_more() {
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let meter = Meter::sharing(Duration::from_secs(3600));
        let first = meter.measure(&[Some(me), Some(u32::MAX / 2)]);
        let again = meter.measure(&[Some(me)]);
        assert_eq!(first[0], again[0], "the sample answers within its time");
        assert!(first[1].is_none());
        // A pid the sample lacks (a restart, a new unit) is measured.
        let moved = meter.measure(&[Some(parent)]);
        let (moved, first) = (moved[0].unwrap(), first[0].unwrap());
        assert!(moved.processes > first.processes, "{moved:?} {first:?}");
        // Without sharing every request scans: the RSS of a growing process moves.
        let fresh = Meter::default();
        let before = fresh.measure(&[Some(me)])[0].unwrap().rss_bytes;
        let grown = vec![1u8; 64 << 20];
        let after = fresh.measure(&[Some(me)])[0].unwrap().rss_bytes;
        assert!(
            after > before + (32 << 20),
            "{before} → {after} ({})",
            grown.len()
        );
    }

    #[test]
    fn a_tree_new_since_the_sample_is_measured_alone_and_joins_it() {
        use std::os::unix::process::CommandExt;
        let me = std::process::id();
        let meter = Meter::sharing(Duration::from_secs(3600));
        meter.measure(&[Some(me)]);
        let taken = |m: &Meter| m.sample.lock().unwrap().as_ref().unwrap().at;
        let at = taken(&meter);
        // A tree of three started after the sample (in a group of its own, to end it at once).
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 1000 & sleep 1000 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = sh.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = loop {
            if proctable::children_of(pid as i32).unwrap_or_default().len() == 2 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let alone = meter.measure(&[Some(me), Some(pid)])[1];
        let again = meter.measure(&[Some(pid)])[0];
        let whole = Meter::default().measure(&[Some(pid)])[0];
        // Asked about alone, with no sample yet: its tree alone is read too.
        let first = Meter::sharing(Duration::from_secs(3600)).measure(&[Some(pid)])[0];
        // Ended before anything is asserted: a failed assertion leaves nothing running.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = sh.wait();
        assert!(started, "the sleeps never started");
        assert_eq!(taken(&meter), at, "measured without a new scan");
        let (alone, whole) = (alone.unwrap(), whole.unwrap());
        assert_eq!(alone.processes, 3, "{alone:?}");
        assert_eq!(alone.processes, whole.processes);
        assert_eq!(first.map(|u| u.processes), Some(3));
        assert!(alone.rss_bytes > 0);
        assert_eq!(
            again,
            Some(alone),
            "and the sample answers for it from then on"
        );
    }

    #[test]
    fn a_large_table_read_by_threads_is_the_whole_table() {
        // More processes than one thread reads (128): 1,100 children of this test.
        let mut kids: Vec<std::process::Child> = (0..1100)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("1000")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let all = read_all();
        let me = std::process::id() as i32;
        let mine = all.iter().filter(|s| s.ppid == me).count();
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        assert_eq!(mine, kids.len());
        let mut pids: Vec<i32> = all.iter().map(|s| s.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        assert_eq!(pids.len(), all.len(), "a process read twice");
    }
}
