//! Output capture. One pump task per process generation reads its stdout and stderr pipes until
//! both close, cuts the bytes into lines, and hands each line to three places: the unit's log
//! file (everything, in order, rotated by size), its in-memory ring (the last N lines), and the
//! terminal printer (which may drop lines for display, never for the file).
//!
//! A pump never waits on anything but its pipes and its own file, so a slow terminal or a
//! flooding neighbour cannot stall it, and a flooding service cannot stall anyone else.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use corral_config::LogSettings;
use regex::Regex;
use tokio::io::unix::AsyncFd;

use crate::proctable::SharedFd;

/// A line longer than this is cut into pieces of this size (never dropped).
pub const MAX_LINE: usize = 64 * 1024;

/// A pipe's capacity as the kernel makes it (16 pages), and so the most one read of it gives.
const PIPE_SIZE: usize = 64 * 1024;

/// What a flooding stream's pipe is grown to, and the most one read takes: the default limit
/// for an unprivileged user (`fs.pipe-max-size`). With 64 KiB a service writing as fast as it
/// can blocks every 64 KiB until the pump has read, and the pump pays a wake-up, a read, a file
/// write and a note to the daemon for each; 200,000 lines of 100 bytes were captured in 26–32 ms
/// with 64 KiB, 15–20 ms with 1 MiB (`corral-bench --capture`, alternating runs). Quiet pipes
/// stay small, and few are grown at once ([`MAX_GROWN`]).
pub const MAX_READ: usize = 1 << 20;

/// How many pipes this process keeps grown at once: 16 MiB of pipe at most, a quarter of what
/// an unprivileged user may have (`fs.pipe-user-pages-soft`, 64 MiB). Past that the kernel
/// makes every new pipe of the user 8 KiB — of each service started then, and of any program
/// of that user — so growing stays well under it, and a pipe that quiets is shrunk back.
const MAX_GROWN: usize = 16;
static GROWN: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        }
    }

    /// `out`/`stdout` or `err`/`stderr`.
    pub fn from_tag(tag: &str) -> Option<Stream> {
        match tag {
            "out" | "stdout" => Some(Stream::Stdout),
            "err" | "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// A moment a log query names (`since`, `until`): a time (RFC 3339, `2026-01-02T15:04:05Z`) or
/// a duration ago (`10m`, `2h`; at most a hundred years).
pub fn parse_when(v: &str) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(v) {
        return Some(t);
    }
    let d = humantime::parse_duration(v).ok()?;
    (d <= std::time::Duration::from_secs(100 * 365 * 86_400)).then(|| {
        SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: SystemTime,
    pub stream: Stream,
    pub text: String,
}

impl LogLine {
    /// The line as the API carries it, of `unit`.
    pub fn into_wire(self, unit: String) -> corral_proto::wire::Line {
        corral_proto::wire::Line {
            unit,
            time_ms: corral_proto::wire::millis(self.time),
            stream: self.stream.tag().to_string(),
            text: self.text,
        }
    }
}

/// Which lines of a log to return.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Only the last N (after the other filters).
    pub tail: Option<usize>,
    /// Only lines at or after this time.
    pub since: Option<SystemTime>,
    /// Only lines matching this pattern.
    pub grep: Option<Regex>,
    /// Only lines before this time.
    pub until: Option<SystemTime>,
    /// Only this stream's lines.
    pub stream: Option<Stream>,
}

/// Read a unit's log files and return the lines `query` selects, oldest first. The files are
/// the truth: they hold what the keeper wrote while no daemon was listening, too.
///
/// The files are read newest first, each from its end backwards, so a `tail` (with or without a
/// pattern) reads only as much as it needs, and `since` stops at the first older line (lines are
/// in time order).
/// `base` is the unit's log file (`.corral/logs/NAME.log`, or its `log_file`); rotated files
/// are `base.1` ….
pub fn query(base: &Path, keep_files: u32, query: &Query) -> io::Result<Vec<LogLine>> {
    query_until(base, keep_files, query, None)
}

/// Like [`query`], reading the current file only up to `end` (where a [`Tail`] starts), so a
/// backlog and a follow meet without a gap or a repeat.
pub fn query_until(
    base: &Path,
    keep_files: u32,
    query: &Query,
    end: Option<u64>,
) -> io::Result<Vec<LogLine>> {
    let base = base.to_path_buf();
    let paths = std::iter::once(base.clone())
        .chain((1..=keep_files).map(|n| PathBuf::from(format!("{}.{n}", base.display()))));
    let wanted = query.tail.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if wanted == 0 {
        return Ok(out);
    }
    let must = query.grep.as_ref().and_then(|g| literal(g.as_str()));
    let must = must.as_deref().map(memchr::memmem::Finder::new);
    'files: for path in paths {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut lines = BackwardLines::new(file)?;
        if path == base
            && let Some(end) = end
        {
            lines.pos = lines.pos.min(end);
        }
        let mut done = false;
        lines.each(must.as_ref(), |raw| {
            // The pattern first: it is cheaper than parsing the time of a line we drop.
            if let Some(g) = &query.grep {
                // The text after `<time> <stream> `, found with memchr (a generic split per
                // byte was the largest part of a grep over 100,000 lines).
                let text = memchr::memchr(b' ', raw)
                    .and_then(|a| {
                        let b = memchr::memchr(b' ', &raw[a + 1..])?;
                        Some(&raw[a + b + 2..])
                    })
                    .unwrap_or_default();
                let matched = match std::str::from_utf8(text) {
                    Ok(t) => g.is_match(t),
                    Err(_) => g.is_match(&String::from_utf8_lossy(text)),
                };
                if !matched {
                    return true;
                }
            }
            let Some(line) = parse_line(raw) else {
                return true;
            };
            if query.since.is_some_and(|s| line.time < s) {
                done = true;
                return false;
            }
            // Newer than `until`: read on (backwards) to the ones before it.
            if query.until.is_some_and(|u| line.time >= u)
                || query.stream.is_some_and(|s| s != line.stream)
            {
                return true;
            }
            out.push(line);
            if out.len() == wanted {
                done = true;
                return false;
            }
            true
        })?;
        if done {
            break 'files;
        }
    }
    out.reverse();
    Ok(out)
}

/// One unit's log for [`query_units`]: its file, how many rotated files it keeps, and where
/// to stop reading the current one (where a follow starts), if anywhere.
pub struct UnitLog {
    pub path: PathBuf,
    pub keep_files: u32,
    pub end: Option<u64>,
}

/// A unit's last write can be stamped a little before the lines in it (file times come from
/// the kernel's coarse clock, a line's stamp from the fine one): a log last written this long
/// before the oldest line a tail keeps has nothing newer than that line.
const MTIME_SLACK: Duration = Duration::from_secs(1);

/// The lines `query` selects from several units' logs, interleaved by time (ties in the order
/// of `units`), each with its unit's position in `units`. On an error, the unit it is about.
///
/// A tail over several units reads their logs newest first (by when each was last written)
/// and leaves out those last written before the oldest line it keeps: with thousands of
/// services of which a few write, a tail reads a few files, not all of them.
pub fn query_units(
    units: &[UnitLog],
    query: &Query,
) -> Result<Vec<(usize, LogLine)>, (usize, io::Error)> {
    let mut order: Vec<(usize, Option<SystemTime>)> = (0..units.len()).map(|i| (i, None)).collect();
    let tail = query.tail.filter(|_| units.len() > 1);
    if tail.is_some() {
        // When each log was last written: its file's time, or its first rotated file's when
        // it is empty or gone just now (rotated, nothing written since). Neither: the unit
        // never wrote a line (the keeper makes every unit's file as it starts; rotation keeps
        // `.1` while there is a `.2`), and is left out.
        let written = |path: &Path| {
            let rotated = || match fs::metadata(format!("{}.1", path.display())) {
                Ok(m) => Some(m.modified().ok()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(_) => Some(None),
            };
            match fs::metadata(path) {
                Ok(m) if m.len() > 0 => Some(m.modified().ok()),
                Ok(_) => rotated(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => rotated(),
                Err(_) => Some(None),
            }
        };
        order.retain_mut(|(i, at)| match written(&units[*i].path) {
            Some(w) => {
                *at = w;
                true
            }
            None => false,
        });
        // Newest first; one whose time could not be read last, and always read.
        order.sort_by_key(|u| std::cmp::Reverse(u.1));
    }
    let mut all: Vec<(usize, LogLine)> = Vec::new();
    let mut oldest_kept: Option<SystemTime> = None;
    for (i, written) in order {
        if let (Some(w), Some(oldest)) = (written, oldest_kept)
            && w + MTIME_SLACK < oldest
        {
            continue;
        }
        let u = &units[i];
        let lines = query_until(&u.path, u.keep_files, query, u.end).map_err(|e| (i, e))?;
        all.extend(lines.into_iter().map(|l| (i, l)));
        // Keep the newest `tail` (each unit's lines come sorted: the sort finds the runs).
        if let Some(n) = tail
            && all.len() >= n
        {
            newest(&mut all, n);
            oldest_kept = all.first().map(|(_, l)| l.time);
        }
    }
    newest(&mut all, query.tail.unwrap_or(usize::MAX));
    Ok(all)
}

/// Sort by time (ties: by unit, then as read) and keep the last `n`.
fn newest(all: &mut Vec<(usize, LogLine)>, n: usize) {
    all.sort_by_key(|(i, l)| (l.time, *i));
    let extra = all.len().saturating_sub(n);
    all.drain(..extra);
}

/// The text every match of `pattern` contains, when the pattern is plain text (between
/// optional `^` and `$`): a grep for it can pass over the lines without it in bulk.
fn literal(pattern: &str) -> Option<String> {
    let inner = pattern.strip_prefix('^').unwrap_or(pattern);
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    (!inner.is_empty() && regex::escape(inner) == inner).then(|| inner.to_string())
}

/// Follows one unit's log file from a position, across rotation: what `logs -f` reads, so a
/// follower gets every line the keeper wrote, however slow it is (the live tap may drop lines
/// for a slow reader; the file never does).
pub struct Tail {
    /// The unit's log file.
    base: PathBuf,
    /// The inode of the file being read, and how far it has been read.
    ino: u64,
    pos: u64,
    /// The start of a line whose end is not written yet.
    partial: Vec<u8>,
}

impl Tail {
    /// From the end of the unit's log as it is now (or its start, when there is none yet).
    pub fn at_end(base: &Path) -> Tail {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(base);
        Tail {
            base: base.to_path_buf(),
            ino: meta.as_ref().map_or(0, |m| m.ino()),
            pos: meta.map_or(0, |m| m.len()),
            partial: Vec::new(),
        }
    }

    /// Where it starts reading: the backlog ends here.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The complete lines written since the last call.
    pub fn read_new(&mut self) -> io::Result<Vec<LogLine>> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        // The same file, no longer than what was read: nothing new, known from one `stat`. A
        // follower of thousands of units, of which a few write, looks at every one at each
        // wake-up; opening and reading each cost six system calls and two allocations.
        match fs::metadata(&self.base) {
            Ok(m) if m.ino() == self.ino && m.len() == self.pos => return Ok(Vec::new()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            _ => {}
        }
        let base = self.base.clone();
        let mut bytes = Vec::new();
        let current = match File::open(&base) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let current_ino = match &current {
            Some(f) => f.metadata()?.ino(),
            None => return Ok(Vec::new()),
        };
        if self.ino != 0 && current_ino != self.ino {
            // Rotated: the rest of the file being read is now `.1`.
            let old = PathBuf::from(format!("{}.1", base.display()));
            if let Ok(mut f) = File::open(&old)
                && f.metadata()?.ino() == self.ino
            {
                f.seek(SeekFrom::Start(self.pos))?;
                f.read_to_end(&mut bytes)?;
            }
            self.ino = current_ino;
            self.pos = 0;
        }
        self.ino = current_ino;
        if let Some(mut f) = current {
            f.seek(SeekFrom::Start(self.pos))?;
            let before = bytes.len();
            f.read_to_end(&mut bytes)?;
            self.pos += (bytes.len() - before) as u64;
        }
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(&bytes);
        let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.partial = data.split_off(complete);
        Ok(data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(parse_line)
            .collect())
    }
}

/// The lines of a file, last first, read in blocks from the end.
struct BackwardLines {
    file: File,
    /// Bytes of the file not read yet: `0..pos`.
    pos: u64,
    /// Read but not yet returned; starts with a possibly partial line.
    buf: Vec<u8>,
    /// The buffer of the block before, reused: a block is as large as the heap's threshold for
    /// mapping memory of its own, and a fresh one for each was a map, its page faults and an
    /// unmap (half of a grep over 100,000 lines).
    spare: Vec<u8>,
}

impl BackwardLines {
    const BLOCK: u64 = 256 * 1024;

    fn new(file: File) -> io::Result<BackwardLines> {
        let pos = file.metadata()?.len();
        Ok(BackwardLines {
            file,
            pos,
            buf: Vec::new(),
            spare: Vec::new(),
        })
    }

    /// Call `each` with every line, last first, until it returns false. Lines are slices of
    /// the block read (no copy, no allocation per line) and found with `memrchr`: a query that
    /// looks at 100,000 lines to keep 10 is a scan, not 100,000 small vectors.
    ///
    /// With `must` (a text every wanted line contains), the lines after the last place it
    /// occurs in a block are passed over in one search, as grep does.
    fn each(
        &mut self,
        must: Option<&memchr::memmem::Finder>,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<()> {
        loop {
            // A complete line is one with a newline before it (or the start of the file).
            let mut end = if self.buf.last() == Some(&b'\n') {
                self.buf.len() - 1
            } else {
                self.buf.len()
            };
            if let Some(must) = must {
                match last_match(must, &self.buf[..end]) {
                    // Keep up to the end of the line it is in.
                    Some(at) => {
                        let line_end =
                            memchr::memchr(b'\n', &self.buf[at..end]).map_or(end, |n| at + n);
                        if line_end < end {
                            self.buf.truncate(line_end + 1);
                            end = line_end;
                        }
                    }
                    // Not in this block: only its first, partial line stays (it may continue
                    // in the block before, and hold the text then).
                    None => {
                        if self.pos == 0 {
                            return Ok(());
                        }
                        let keep =
                            memchr::memchr(b'\n', &self.buf).map_or(self.buf.len(), |n| n + 1);
                        self.buf.truncate(keep);
                        self.read_block()?;
                        continue;
                    }
                }
            }
            if let Some(nl) = memchr::memrchr(b'\n', &self.buf[..end]) {
                if !each(&self.buf[nl + 1..end]) {
                    return Ok(());
                }
                self.buf.truncate(nl + 1);
                continue;
            }
            if self.pos == 0 {
                if end > 0 {
                    each(&self.buf[..end]);
                }
                self.buf.clear();
                return Ok(());
            }
            self.read_block()?;
        }
    }

    /// Put the block before what is in `buf` in front of it.
    fn read_block(&mut self) -> io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let n = Self::BLOCK.min(self.pos);
        self.pos -= n;
        let mut block = std::mem::take(&mut self.spare);
        block.clear();
        block.reserve(n as usize + self.buf.len());
        block.resize(n as usize, 0);
        self.file.seek(SeekFrom::Start(self.pos))?;
        self.file.read_exact(&mut block)?;
        block.extend_from_slice(&self.buf);
        self.spare = std::mem::replace(&mut self.buf, block);
        Ok(())
    }
}

/// Where the needle of `finder` last occurs in `hay`. memchr's reverse search is not vectorized
/// (it was a third of a grep over 100,000 lines) and its forward one is: the forward one is run
/// over windows from the end, doubling, so a match near the end (a common text: one in every
/// line) costs about its distance from the end, not the whole block. A literal holds no newline,
/// so where matches overlap, the last one found forwards is in the same line as the very last.
fn last_match(finder: &memchr::memmem::Finder, hay: &[u8]) -> Option<usize> {
    let reach = finder.needle().len().saturating_sub(1);
    let (mut end, mut window) = (hay.len(), 256);
    while end > 0 {
        let start = end.saturating_sub(window);
        // Matches that start in `start..end`: those that start later were looked at before.
        let stop = (end + reach).min(hay.len());
        if let Some(at) = finder.find_iter(&hay[start..stop]).last() {
            return Some(start + at);
        }
        end = start;
        window = (window * 2).min(64 * 1024);
    }
    None
}

/// One line of a log file: `<rfc3339 time> <out|err> <text>`.
fn parse_line(raw: &[u8]) -> Option<LogLine> {
    let mut parts = raw.splitn(3, |b| *b == b' ');
    let time = humantime::parse_rfc3339(std::str::from_utf8(parts.next()?).ok()?).ok()?;
    let stream = match parts.next()? {
        b"out" => Stream::Stdout,
        b"err" => Stream::Stderr,
        _ => return None,
    };
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    Some(LogLine { time, stream, text })
}

/// How much formatted text a log file holds before writing it out: a chunk of `MAX_READ` is
/// written in pieces, so the buffer kept per unit stays this size.
const WRITE_BATCH: usize = 128 * 1024;

/// `<name>.log`, rotated to `<name>.log.1` … `.N` when it grows past the limit.
pub struct LogFile {
    path: PathBuf,
    file: File,
    /// A chunk's lines, formatted, so a chunk is one `write` (or one per `WRITE_BATCH` of a
    /// large one). Empty (no allocation) until the unit writes.
    buf: Vec<u8>,
    /// Lines in `buf`.
    buffered: u64,
    /// The file's size with `buf` written: what rotation goes by.
    size: u64,
    /// The file's size as last written whole: a write that fails part-way is cut back to it,
    /// so the file never holds half a line.
    written: u64,
    settings: LogSettings,
    trouble: Option<Trouble>,
    /// The file's device and inode, and when its name was last looked up: a file removed (to
    /// clear a log) or moved away (by logrotate) is replaced by a new one within a second,
    /// instead of written on unseen (filling the disk with what nobody can read).
    identity: (u64, u64),
    looked_at: std::time::Instant,
}

/// How often a written log file's name is checked to still name it.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The file cannot be written (a full disk, most often): the lines that come meanwhile are
/// counted, not kept — the pipes are still read, as a service must never block on its output —
/// and writing is tried again a second later, with a line saying what is missing.
struct Trouble {
    since: SystemTime,
    missing: u64,
    retry_at: std::time::Instant,
}

/// How long a log file that could not be written is left alone before the next try.
const RETRY_WRITE: Duration = Duration::from_secs(1);

/// What changed in whether a log file can be written, for whoever runs corral.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTrouble {
    /// Writing it (or opening it) failed: the system's word for why.
    Failing(String),
    /// Written again, after this many lines could not be.
    Recovered { missing: u64 },
}

impl LogTrouble {
    /// Said of the unit whose log file is at `path` (`NAME: …`).
    pub fn describe(&self, path: &Path) -> String {
        match self {
            LogTrouble::Failing(why) => format!(
                "cannot write its log file `{}`: {why}; its lines are not kept until that works again (tried each second)",
                path.display()
            ),
            LogTrouble::Recovered { missing } => {
                format!("its log file is written again; {missing} lines are missing from it")
            }
        }
    }
}

impl LogFile {
    pub fn open(path: PathBuf, settings: LogSettings) -> io::Result<LogFile> {
        let file = crate::statedir::open_append(&path)?;
        let meta = file.metadata()?;
        Ok(LogFile {
            path,
            file,
            buf: Vec::new(),
            buffered: 0,
            size: meta.len(),
            written: meta.len(),
            settings,
            trouble: None,
            identity: identity(&meta),
            looked_at: std::time::Instant::now(),
        })
    }

    /// Open the file by its name again (a new one if it is gone, in a new directory if that is
    /// gone too: `rm -rf .corral/logs` to clear the logs).
    fn reopen(&mut self) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let file = match crate::statedir::open_append(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = self.path.parent() {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)?;
                }
                crate::statedir::open_append(&self.path)?
            }
            opened => opened?,
        };
        let meta = file.metadata()?;
        self.file = file;
        (self.size, self.written) = (meta.len(), meta.len());
        self.identity = identity(&meta);
        Ok(())
    }

    /// Whether the file's name names another file now, or none.
    fn moved_away(&self) -> bool {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) => identity(&meta) != self.identity,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// Lines go out as `<time> <out|err> <text>`. Writes are plain blocking writes to the page
    /// cache: cheaper than a hop to a blocking thread for every chunk. Says when the file
    /// stops (or starts again) being written.
    pub fn write_lines(
        &mut self,
        time: SystemTime,
        stream: Stream,
        lines: &[&[u8]],
    ) -> Option<LogTrouble> {
        if let Some(t) = &mut self.trouble
            && std::time::Instant::now() < t.retry_at
        {
            t.missing += lines.len() as u64;
            return None;
        }
        let recovering = self.trouble.take();
        let stamp = humantime::format_rfc3339_millis(time).to_string();
        if recovering.is_none() && self.looked_at.elapsed() >= LOOK_EVERY {
            self.looked_at = std::time::Instant::now();
            if self.moved_away()
                && let Err(e) = self.reopen()
            {
                return self.fail(e, lines.len() as u64, None);
            }
        }
        if let Some(t) = &recovering {
            // What the failed write left of a line is cut off (where that fails, the note
            // starts on a line of its own), and the file opened again by its name (a rotation
            // that failed half-way may have renamed it).
            let cut = self.file.set_len(self.written).is_ok();
            if let Err(e) = self.reopen() {
                return self.fail(e, lines.len() as u64, recovering);
            }
            if !cut {
                self.buf.push(b'\n');
                self.size += 1;
            }
            self.note_missing(&stamp, t);
        }
        for (i, line) in lines.iter().enumerate() {
            self.push(&stamp, stream, line);
            let done = if self.size > self.settings.max_file_bytes {
                self.write_out().and_then(|_| self.rotate())
            } else if self.buf.len() >= WRITE_BATCH {
                self.write_out()
            } else {
                Ok(())
            };
            if let Err(e) = done {
                return self.fail(e, (lines.len() - i - 1) as u64, recovering);
            }
        }
        if let Err(e) = self.write_out() {
            return self.fail(e, 0, recovering);
        }
        recovering.map(|t| LogTrouble::Recovered { missing: t.missing })
    }

    fn push(&mut self, stamp: &str, stream: Stream, line: &[u8]) {
        let before = self.buf.len();
        self.buf.extend_from_slice(stamp.as_bytes());
        self.buf.push(b' ');
        self.buf.extend_from_slice(stream.tag().as_bytes());
        self.buf.push(b' ');
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        self.size += (self.buf.len() - before) as u64;
        self.buffered += 1;
    }

    /// On failure the buffer is left as it is, for [`LogFile::fail`] to count.
    fn write_out(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        self.buffered = 0;
        Ok(())
    }

    /// A write failed: the lines not written (those in the buffer and `unsent` more) are
    /// counted as missing, and the file is left alone for `RETRY_WRITE`. Said once, as it
    /// starts (not at each failed try).
    fn fail(&mut self, e: io::Error, unsent: u64, before: Option<Trouble>) -> Option<LogTrouble> {
        // A write that failed part-way may have left half a line: cut back to whole ones.
        let _ = self.file.set_len(self.written);
        let lost = self.buffered + unsent;
        self.buf.clear();
        self.buffered = 0;
        self.size = self.written;
        let said = before.is_some();
        let (since, missing) = before.map_or((SystemTime::now(), 0), |t| (t.since, t.missing));
        self.trouble = Some(Trouble {
            since,
            missing: missing + lost,
            retry_at: std::time::Instant::now() + RETRY_WRITE,
        });
        (!said).then(|| LogTrouble::Failing(e.to_string()))
    }

    /// The line saying what is missing, in front of the next lines written.
    fn note_missing(&mut self, stamp: &str, t: &Trouble) {
        let note = format!(
            "corral: {} lines from {} on are missing here: this file could not be written",
            t.missing,
            humantime::format_rfc3339_seconds(t.since)
        );
        self.push(stamp, Stream::Stderr, note.as_bytes());
        // Not one of the unit's lines: a failure now counts only theirs as missing.
        self.buffered = 0;
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.settings.keep_files;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            for n in (1..keep).rev() {
                let _ = fs::rename(numbered(n), numbered(n + 1));
            }
            fs::rename(&self.path, numbered(1))?;
        }
        self.reopen()
    }
}

fn identity(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl Drop for LogFile {
    /// The last generation of its unit has ended while the file could not be written: one try
    /// to say what is missing (the next writer of the file would not know).
    fn drop(&mut self) {
        if let Some(t) = self.trouble.take() {
            let _ = self.file.set_len(self.written);
            let stamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            self.note_missing(&stamp, &t);
            if let Ok(mut file) = crate::statedir::open_append(&self.path) {
                let _ = file.write_all(&self.buf);
            }
        }
    }
}

/// Reads a generation's stdout and stderr until both close, and hands each chunk's complete
/// lines to `sink`, as slices of the bytes read (no copy, no allocation per line).
pub struct Pump<F: FnMut(Stream, &[&[u8]])> {
    pub sink: F,
}

/// Splits a byte stream into lines. Reads land at the end of `text`, behind the unfinished line
/// left by the previous read; complete lines are spans of `text` until the sink has seen them.
struct LineSplitter {
    stream: Stream,
    text: Vec<u8>,
    /// Complete lines found by the last `split`, as `(start, end)` in `text`.
    spans: Vec<(usize, usize)>,
    /// Where the unfinished line starts: everything before it was handed on.
    rest: usize,
    /// The unfinished line was just cut at `MAX_LINE` and is empty: a newline now ends that
    /// long line, it does not make an empty one.
    cut: bool,
    /// How much one read may add: grows while a stream keeps filling it, shrinks when it
    /// stops (an idle stream reserves little for its next line).
    read_size: usize,
    /// The pipe is grown to `MAX_READ` (and holds one of the `MAX_GROWN`).
    grown: bool,
    /// The pipe's size as it was made, and shrunk back to: the kernel's 64 KiB, or less for
    /// the units of a large stack (`spawn::quiet_pipe_size`).
    quiet: usize,
}

impl Drop for LineSplitter {
    fn drop(&mut self) {
        if self.grown {
            GROWN.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl LineSplitter {
    fn new(stream: Stream) -> LineSplitter {
        LineSplitter {
            stream,
            text: Vec::new(),
            spans: Vec::new(),
            rest: 0,
            cut: false,
            read_size: 4096,
            grown: false,
            quiet: PIPE_SIZE,
        }
    }

    /// After a read of `n` bytes (not the end): reads grow while they (nearly) fill their room
    /// and shrink when they come back under a quarter of it. At 64 KiB a full read means the
    /// pipe was full and its writer waiting: the pipe is grown so the writer goes on while the
    /// pump writes, and reads may grow to `MAX_READ`. Nearly: a writer of short lines leaves
    /// the end of each page of the pipe unused (a write that does not fit in a page's rest
    /// starts the next), so a full pipe of 100-byte lines holds 64,000 bytes, not 65,536.
    /// Once its reads are back under 64 KiB, a grown pipe is shrunk back.
    fn next_read_size(&mut self, n: usize, pipe: Option<&AsyncFd<SharedFd>>) {
        let fd = pipe.map(|p| &*p.get_ref().0);
        if n >= self.read_size - self.read_size / 4 {
            if self.read_size >= self.quiet
                && !self.grown
                && let Some(fd) = fd
            {
                self.grown = grow_pipe(fd);
            }
            let limit = if self.grown { MAX_READ } else { self.quiet };
            self.read_size = (self.read_size * 2).min(limit);
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(4096);
            if self.grown
                && self.read_size < self.quiet
                && let Some(fd) = fd
            {
                self.grown = !shrink_pipe(fd, self.quiet);
            }
        }
    }

    /// Drop what the sink has seen, keeping the unfinished line at the front. A stream that
    /// has gone quiet (its last read did not fill the room) and left nothing unfinished gives
    /// its buffer back: thousands of idle services would otherwise hold one each.
    fn compact(&mut self, last_read: usize) {
        self.text.drain(..self.rest);
        self.rest = 0;
        self.spans.clear();
        if self.text.is_empty() && last_read < self.read_size {
            self.text = Vec::new();
        }
    }

    /// Find the complete lines among the bytes added since the last call (the unfinished line
    /// before them has no newline). Lines over `MAX_LINE` are cut.
    fn split(&mut self, added: usize) {
        let mut search = self.text.len() - added;
        let mut start = self.rest;
        while let Some(i) = memchr::memchr(b'\n', &self.text[search..]) {
            let nl = search + i;
            let mut end = nl;
            if end > start && self.text[end - 1] == b'\r' {
                end -= 1;
            }
            if !(end == start && self.cut) {
                self.push_cut(start, end);
            }
            self.cut = false;
            start = nl + 1;
            search = start;
        }
        if start < self.text.len() {
            self.cut = false;
        }
        while self.text.len() - start >= MAX_LINE {
            self.spans.push((start, start + MAX_LINE));
            start += MAX_LINE;
            self.cut = start == self.text.len();
        }
        self.rest = start;
    }

    /// The stream ended: an unfinished line is a line.
    fn finish(&mut self) {
        if self.rest < self.text.len() {
            self.push_cut(self.rest, self.text.len());
            self.rest = self.text.len();
        }
    }

    fn push_cut(&mut self, start: usize, end: usize) {
        if end - start <= MAX_LINE {
            self.spans.push((start, end));
        } else {
            let mut at = start;
            while at < end {
                let to = (at + MAX_LINE).min(end);
                self.spans.push((at, to));
                at = to;
            }
        }
    }

    fn lines(&self) -> Vec<&[u8]> {
        self.spans.iter().map(|&(a, b)| &self.text[a..b]).collect()
    }
}

/// Grow a pipe to `MAX_READ`, if fewer than `MAX_GROWN` are: whether it was. Its pages are
/// taken only while it holds data. A refusal (no room left here, over the user's share, or
/// `fs.pipe-max-size` set lower) leaves it as it was: it only reads slower.
fn grow_pipe(fd: &OwnedFd) -> bool {
    if GROWN.fetch_add(1, Ordering::Relaxed) >= MAX_GROWN
        || nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(MAX_READ as _)).is_err()
    {
        GROWN.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    true
}

/// Shrink a grown pipe back to `size`, its size as made: whether it was (the kernel refuses
/// while it holds more than that; the next quiet read tries again).
fn shrink_pipe(fd: &OwnedFd, size: usize) -> bool {
    let shrunk = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size as _)).is_ok();
    if shrunk {
        GROWN.fetch_sub(1, Ordering::Relaxed);
    }
    shrunk
}

/// A pipe's size as the pump finds it (at most the kernel's 64 KiB: one grown before, by a
/// keeper that is gone, counts as made at that).
fn quiet_size(pipe: Option<&AsyncFd<SharedFd>>) -> usize {
    pipe.and_then(|p| nix::fcntl::fcntl(&*p.get_ref().0, nix::fcntl::FcntlArg::F_GETPIPE_SZ).ok())
        .map_or(PIPE_SIZE, |n| (n as usize).clamp(4096, PIPE_SIZE))
}

/// Watch a pipe's read end for reading (made non-blocking: the descriptor is shared with the
/// daemon's copy, which never reads it). The keeper holds it too (for a daemon that connects):
/// the pump reads it without a descriptor of its own. None if it cannot be watched.
fn watch_pipe(fd: Option<Arc<OwnedFd>>) -> Option<AsyncFd<SharedFd>> {
    let fd = fd?;
    let flags = nix::fcntl::fcntl(&*fd, nix::fcntl::FcntlArg::F_GETFL).ok()?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&*fd, nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
    // SAFETY: `SharedFd` holds the descriptor open (its `Arc`) for as long as the `AsyncFd`
    // owns it, and always names the same one.
    unsafe { AsyncFd::register_with_interest(SharedFd(fd), tokio::io::Interest::READABLE) }.ok()
}

impl<F: FnMut(Stream, &[&[u8]])> Pump<F> {
    /// Read both pipes until both are closed.
    pub async fn run(mut self, stdout: Option<Arc<OwnedFd>>, stderr: Option<Arc<OwnedFd>>) {
        let mut out = watch_pipe(stdout);
        let mut err = watch_pipe(stderr);
        // Reads start small and grow while a stream keeps filling them: a flooding one reads
        // up to `MAX_READ` at a time, an idle one holds no buffer.
        let mut out_split = LineSplitter::new(Stream::Stdout);
        let mut err_split = LineSplitter::new(Stream::Stderr);
        out_split.quiet = quiet_size(out.as_ref());
        err_split.quiet = quiet_size(err.as_ref());
        // Polled by hand, not through two read futures under `select!`: each of those held a
        // readiness waiter, and this task lives as long as its process — at thousands of
        // processes the keeper's largest part. The stream looked at first alternates, so a
        // flooding one does not keep the other waiting.
        let mut err_first = false;
        while out.is_some() || err.is_some() {
            err_first = !err_first;
            let (n, which) = std::future::poll_fn(|cx| {
                for which in if err_first {
                    [Stream::Stderr, Stream::Stdout]
                } else {
                    [Stream::Stdout, Stream::Stderr]
                } {
                    let (pipe, split) = match which {
                        Stream::Stdout => (&mut out, &mut out_split),
                        Stream::Stderr => (&mut err, &mut err_split),
                    };
                    if let std::task::Poll::Ready(n) = poll_read(pipe, split, cx) {
                        return std::task::Poll::Ready((n, which));
                    }
                }
                std::task::Poll::Pending
            })
            .await;
            let (splitter, pipe) = match which {
                Stream::Stdout => (&mut out_split, &mut out),
                Stream::Stderr => (&mut err_split, &mut err),
            };
            if n == 0 {
                splitter.finish();
                *pipe = None;
            } else {
                splitter.split(n);
            }
            if !splitter.spans.is_empty() {
                (self.sink)(splitter.stream, &splitter.lines());
            }
            splitter.compact(n);
            if n > 0 {
                splitter.next_read_size(n, pipe.as_ref());
            }
            if pipe.is_none() {
                *splitter = LineSplitter::new(splitter.stream);
            }
        }
    }
}

/// Read from a pipe onto the end of the splitter's text, once it is readable; an error counts
/// as end of stream. Room is made only once there is something to read: a quiet service holds
/// no buffer. A closed pipe (None) is never ready.
fn poll_read(
    pipe: &mut Option<AsyncFd<SharedFd>>,
    split: &mut LineSplitter,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<usize> {
    use std::task::Poll;
    let Some(p) = pipe else {
        return Poll::Pending;
    };
    loop {
        let mut ready = match p.poll_read_ready(cx) {
            Poll::Ready(Ok(ready)) => ready,
            Poll::Ready(Err(_)) => return Poll::Ready(0),
            Poll::Pending => return Poll::Pending,
        };
        // Into the spare room behind the unfinished line (at least `read_size`).
        split.text.reserve(split.read_size);
        let spare = split.text.spare_capacity_mut();
        let (at, room) = (spare.as_mut_ptr(), spare.len());
        let read = ready.try_io(|fd| {
            // SAFETY: `read` writes at most `room` bytes into the vector's spare capacity.
            let n = unsafe { nix::libc::read(fd.as_raw_fd(), at.cast(), room) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match read {
            Ok(Ok(n)) => {
                // SAFETY: the kernel initialized `n` bytes after the old end.
                unsafe { split.text.set_len(split.text.len() + n) };
                return Poll::Ready(n);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(_)) => return Poll::Ready(0),
            // Not readable after all: its readiness is cleared; poll again (registers the waker).
            Err(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        for c in chunks {
            s.text.extend_from_slice(c);
            s.split(c.len());
            out.extend(s.lines().into_iter().map(<[u8]>::to_vec));
            s.compact(c.len());
        }
        s.finish();
        out.extend(s.lines().into_iter().map(<[u8]>::to_vec));
        out
    }

    #[test]
    fn a_quiet_stream_gives_its_buffer_back() {
        let mut s = LineSplitter::new(Stream::Stdout);
        // A read that filled the room: more is likely to follow, the buffer stays.
        s.text
            .extend(std::iter::repeat_n(b'x', 4095).chain([b'\n']));
        s.split(4096);
        s.compact(4096);
        assert!(s.text.capacity() >= 4096);
        // A short read that ended a line: the stream went quiet, nothing is held.
        s.text.extend_from_slice(b"done\n");
        s.split(5);
        s.compact(5);
        assert_eq!(s.text.capacity(), 0);
        // An unfinished line is kept, whatever the read.
        s.text.extend_from_slice(b"half");
        s.split(4);
        s.compact(4);
        assert_eq!(s.text, b"half");
    }

    #[test]
    fn lines_across_chunks() {
        let out = split_all(&[b"a\nb", b"c\r\n", b"\nd"]);
        assert_eq!(
            out,
            [b"a".to_vec(), b"bc".to_vec(), b"".to_vec(), b"d".to_vec()]
        );
    }

    #[test]
    fn a_line_of_exact_multiples_of_the_cut_ends_without_an_empty_line() {
        let mut input = vec![b'y'; MAX_LINE * 3];
        input.push(b'\n');
        input.extend_from_slice(b"next\n");
        let out = split_all(&[&input[..MAX_LINE * 3], &input[MAX_LINE * 3..]]);
        assert_eq!(out.len(), 4, "three cut pieces and `next`, no empty line");
        assert_eq!(out[3], b"next");
        // An empty line of its own is kept.
        assert_eq!(
            split_all(&[b"a\n\nb\n"]),
            [b"a".to_vec(), vec![], b"b".to_vec()]
        );
    }

    #[test]
    fn long_lines_are_cut_not_dropped() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.push(b'\n');
        let out = split_all(&[&input[..1000], &input[1000..]]);
        assert_eq!(out.len(), 3);
        assert_eq!(out.concat(), long);
    }

    #[test]
    fn backward_lines_cross_blocks() {
        let dir = tempfile_dir();
        let path = dir.join("b.log");
        let mut text = String::new();
        for i in 0..30_000 {
            text.push_str(&format!("{i}\n"));
        }
        text.push_str("no newline at the end");
        fs::write(&path, &text).unwrap();
        let mut lines: Vec<String> = Vec::new();
        BackwardLines::new(File::open(&path).unwrap())
            .unwrap()
            .each(None, |l| {
                lines.push(String::from_utf8(l.to_vec()).unwrap());
                true
            })
            .unwrap();
        assert_eq!(lines.len(), 30_001);
        assert_eq!(lines[0], "no newline at the end");
        assert_eq!(lines[1], "29999");
        assert_eq!(lines[30_000], "0");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_grep_for_plain_text_passes_over_lines_in_bulk_and_finds_the_same() {
        assert_eq!(literal("^9999"), Some("9999".into()));
        assert_eq!(literal("error$"), Some("error".into()));
        assert_eq!(literal("err.r"), None);
        assert_eq!(literal("(?i)error"), None);
        assert_eq!(literal("^$"), None);
        let dir = tempfile_dir();
        let path = dir.join("g.log");
        let mut text = String::new();
        // Over several 256 KiB blocks, so matches fall on both sides of block edges.
        for i in 0..60_000 {
            let tag = if i % 997 == 0 || i == 59_999 || i == 0 {
                "needle"
            } else {
                "hay"
            };
            text.push_str(&format!("{i} {tag} {}\n", "x".repeat(i % 40)));
        }
        fs::write(&path, &text).unwrap();
        let finder = memchr::memmem::Finder::new("needle");
        let collect = |must: Option<&memchr::memmem::Finder>| {
            let mut got = Vec::new();
            BackwardLines::new(File::open(&path).unwrap())
                .unwrap()
                .each(must, |l| {
                    if memchr::memmem::find(l, b"needle").is_some() {
                        got.push(l.to_vec());
                    }
                    true
                })
                .unwrap();
            got
        };
        let bulk = collect(Some(&finder));
        assert_eq!(bulk, collect(None));
        assert_eq!(bulk.len(), 60_000 / 997 + 2);
        assert!(bulk[0].starts_with(b"59999 needle"));
        // A text in nearly every line (the search from the end stops at the nearest).
        let frequent = memchr::memmem::Finder::new("9");
        let mut got = Vec::new();
        BackwardLines::new(File::open(&path).unwrap())
            .unwrap()
            .each(Some(&frequent), |l| {
                if memchr::memchr(b'9', l).is_some() {
                    got.push(l.to_vec());
                }
                true
            })
            .unwrap();
        let nines: Vec<&[u8]> = text
            .lines()
            .rev()
            .map(str::as_bytes)
            .filter(|l| l.contains(&b'9'))
            .collect();
        assert_eq!(got, nines);
        // Matches that overlap (found forwards, one of them is skipped) are in one line.
        let lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
        let overlapping = memchr::memmem::Finder::new("x".repeat(30).as_bytes()).into_owned();
        let mut got = Vec::new();
        BackwardLines::new(File::open(&path).unwrap())
            .unwrap()
            .each(Some(&overlapping), |l| {
                got.push(l.to_vec());
                true
            })
            .unwrap();
        let wanted: Vec<&Vec<u8>> = lines
            .iter()
            .rev()
            .filter(|l| l.ends_with(&[b'x'; 30]))
            .collect();
        let kept: Vec<&Vec<u8>> = got.iter().filter(|l| l.ends_with(&[b'x'; 30])).collect();
        assert_eq!(kept, wanted);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A file that cannot be written (here `/dev/full`: every write is ENOSPC, as on a full
    /// disk) is said once, counted meanwhile, tried again after a pause, and what is missing is
    /// said in the file when it works again; never half a line.
    #[test]
    fn a_file_that_cannot_be_written_is_tried_again_and_says_what_is_missing() {
        let dir = tempfile_dir();
        let path = dir.join("svc.log");
        let settings = LogSettings {
            ring_lines: 3,
            max_file_bytes: 1 << 20,
            keep_files: 1,
        };
        let mut log = LogFile::open(path.clone(), settings).unwrap();
        let t = SystemTime::now();
        assert_eq!(log.write_lines(t, Stream::Stdout, &[b"one"]), None);
        // The disk fills up.
        log.file = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let Some(LogTrouble::Failing(why)) =
            log.write_lines(t, Stream::Stdout, &[b"two", b"three"])
        else {
            panic!("a failed write is said")
        };
        assert!(why.contains("No space left"), "{why}");
        // Said once; until the pause is over, lines are only counted (no write is tried).
        assert_eq!(log.write_lines(t, Stream::Stderr, &[b"four"]), None);
        assert_eq!(log.trouble.as_ref().map(|t| t.missing), Some(3));
        // The pause is over, the disk still full: still one message only.
        log.trouble.as_mut().unwrap().retry_at = std::time::Instant::now();
        log.file = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        // (The try opens the file again by its name: here that works, so keep it full by
        // making the name's file unwritable for this one try.)
        let saved = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert_eq!(log.write_lines(t, Stream::Stdout, &[b"five"]), None);
        assert_eq!(log.trouble.as_ref().map(|t| t.missing), Some(4));
        fs::remove_dir(&path).unwrap();
        fs::write(&path, &saved).unwrap();
        // Space again.
        log.trouble.as_mut().unwrap().retry_at = std::time::Instant::now();
        assert_eq!(
            log.write_lines(t, Stream::Stdout, &[b"six"]),
            Some(LogTrouble::Recovered { missing: 4 })
        );
        assert_eq!(log.write_lines(t, Stream::Stdout, &[b"seven"]), None);
        let texts: Vec<String> = query(&path, 1, &Query::default())
            .unwrap()
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(texts.len(), 4, "{texts:?}");
        assert_eq!(texts[0], "one");
        assert!(
            texts[1].starts_with("corral: 4 lines from ")
                && texts[1].ends_with("are missing here: this file could not be written"),
            "{texts:?}"
        );
        assert_eq!(&texts[2..], ["six", "seven"]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// What a write that failed part-way left of a line is cut off before the file is
    /// written again.
    #[test]
    fn a_failed_write_leaves_no_half_line() {
        let dir = tempfile_dir();
        let path = dir.join("svc.log");
        let mut log = LogFile::open(path.clone(), LogSettings::default()).unwrap();
        let t = SystemTime::now();
        log.write_lines(t, Stream::Stdout, &[b"whole"]);
        // As a disk filling up mid-write leaves it: part of a line landed, then the write
        // failed (the failure itself is the test above).
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2026-11-25T00:00:00.000Z out ha")
            .unwrap();
        log.trouble = Some(Trouble {
            since: t,
            missing: 1,
            retry_at: std::time::Instant::now(),
        });
        assert_eq!(
            log.write_lines(t, Stream::Stdout, &[b"after"]),
            Some(LogTrouble::Recovered { missing: 1 })
        );
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(" out whole"), "{text}");
        assert!(lines[1].contains(" err corral: 1 lines from "), "{text}");
        assert!(lines[2].ends_with(" out after"), "{text}");
        assert!(!text.contains(" ha"), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A log file removed (to clear it) or moved away (logrotate) is followed by a new one,
    /// not written on unseen.
    #[test]
    fn a_log_file_removed_or_moved_away_is_started_anew() {
        let dir = tempfile_dir();
        let path = dir.join("svc.log");
        let mut log = LogFile::open(path.clone(), LogSettings::default()).unwrap();
        let t = SystemTime::now();
        let a_second_on = |log: &mut LogFile| {
            log.looked_at = std::time::Instant::now() - LOOK_EVERY;
        };
        let texts = |path: &Path| -> Vec<String> {
            fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
                .collect()
        };
        log.write_lines(t, Stream::Stdout, &[b"one"]);
        fs::remove_file(&path).unwrap();
        // Within the second, nothing is looked up (the file is written as it was).
        log.write_lines(t, Stream::Stdout, &[b"unseen"]);
        assert!(!path.exists());
        a_second_on(&mut log);
        assert_eq!(log.write_lines(t, Stream::Stdout, &[b"two"]), None);
        assert_eq!(texts(&path), ["two"]);
        // Moved away: the moved file keeps what it had, the name gets a new one.
        let moved = dir.join("svc.log.old");
        fs::rename(&path, &moved).unwrap();
        a_second_on(&mut log);
        log.write_lines(t, Stream::Stdout, &[b"three"]);
        assert_eq!(texts(&moved), ["two"]);
        assert_eq!(texts(&path), ["three"]);
        // Left alone, it is written on.
        a_second_on(&mut log);
        log.write_lines(t, Stream::Stdout, &[b"four"]);
        assert_eq!(texts(&path), ["three", "four"]);
        // Its directory removed with it: both made again (the directory private).
        fs::remove_dir_all(&dir).unwrap();
        a_second_on(&mut log);
        assert_eq!(log.write_lines(t, Stream::Stdout, &[b"five"]), None);
        assert_eq!(texts(&path), ["five"]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotation_keeps_n_files() {
        let dir = tempfile_dir();
        let settings = LogSettings {
            ring_lines: 3,
            max_file_bytes: 100,
            keep_files: 2,
        };
        let mut log = LogFile::open(dir.join("svc.log"), settings).unwrap();
        for i in 0..20 {
            let line = format!("{i:02}{}", "y".repeat(38)).into_bytes();
            log.write_lines(SystemTime::now(), Stream::Stdout, &[&line]);
        }
        assert!(dir.join("svc.log.1").exists());
        assert!(dir.join("svc.log.2").exists());
        assert!(!dir.join("svc.log.3").exists());
        // A query reads the rotated files too, in order.
        let all = query(&dir.join("svc.log"), 2, &Query::default()).unwrap();
        let numbers: Vec<&str> = all.iter().map(|l| &l.text[..2]).collect();
        let mut sorted = numbers.clone();
        sorted.sort();
        assert_eq!(numbers, sorted);
        assert_eq!(numbers.last(), Some(&"19"));
        let q = Query {
            tail: Some(2),
            grep: Some(Regex::new("^1[0-8]").unwrap()),
            since: None,
            until: None,
            stream: None,
        };
        let got: Vec<String> = query(&dir.join("svc.log"), 2, &q)
            .unwrap()
            .into_iter()
            .map(|l| l.text[..2].to_string())
            .collect();
        // The files kept hold lines 10–19 (older ones rotated away); of 10–18, the last two.
        assert_eq!(got, ["17", "18"]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A fresh directory for one test (tests may share a process under `cargo test`).
    fn tempfile_dir() -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("corral-logs-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// A stream that floods does not keep the other's lines waiting: read by the same task,
    /// they are looked at in turn (a reader that always tried stdout first never came to
    /// stderr while stdout had data).
    #[tokio::test]
    async fn a_flooding_stream_does_not_keep_the_other_waiting() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flood = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut out = File::from(out_w);
                let line = [[b'x'; 99].as_slice(), b"\n"].concat();
                while !stop.load(Ordering::Relaxed) {
                    if out.write_all(&line).is_err() {
                        break;
                    }
                }
            })
        };
        // The flood is under way before the one line comes.
        std::thread::sleep(std::time::Duration::from_millis(20));
        File::from(err_w).write_all(b"the one\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pump = Pump {
            // A slow reader of stdout: its pipe is full again at every look.
            sink: move |stream: Stream, lines: &[&[u8]]| match stream {
                Stream::Stderr => {
                    for l in lines {
                        let _ = tx.send(l.to_vec());
                    }
                }
                Stream::Stdout => std::thread::sleep(std::time::Duration::from_millis(1)),
            },
        };
        let task = tokio::spawn(pump.run(Some(Arc::new(out_r)), Some(Arc::new(err_r))));
        let got = tokio::task::spawn_blocking(move || {
            rx.recv_timeout(std::time::Duration::from_secs(10))
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        // Joined off this thread: the pump must go on reading for the writer to see `stop`.
        tokio::task::spawn_blocking(move || flood.join().unwrap())
            .await
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the pump ends once both pipes are closed")
            .unwrap();
        assert_eq!(
            got.expect("the stderr line, while stdout floods"),
            b"the one"
        );
    }

    /// A stream whose pipe is (nearly) full at every read has its pipe grown and its reads taken up to
    /// `MAX_READ`, and every line still comes once, in order. The sink waits for the pipe to be
    /// full again before it returns, so each read fills its room whatever the machine's pace.
    #[tokio::test]
    async fn a_flooding_stream_gets_a_larger_pipe_and_loses_no_line() {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicBool, Ordering};
        let (r, w) = nix::unistd::pipe().unwrap();
        let r = Arc::new(r);
        let total = 60_000;
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut out = File::from(w);
                let text: String = (0..total)
                    .map(|i| format!("{i:08} {}\n", "z".repeat(90)))
                    .collect();
                // A page a write: the pipe is full when it holds its capacity in bytes.
                for page in text.as_bytes().chunks(4096) {
                    out.write_all(page).unwrap();
                }
                done.store(true, Ordering::Relaxed);
            })
        };
        let pending = |fd: &OwnedFd| {
            let mut n: nix::libc::c_int = 0;
            // SAFETY: FIONREAD writes one int.
            unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
            n as usize
        };
        let capacity =
            |fd: &OwnedFd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
        let (seen, biggest) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(0)));
        let widest = Arc::new(Mutex::new(0));
        let pump = Pump {
            sink: {
                let (r, seen, biggest) = (r.clone(), seen.clone(), biggest.clone());
                let widest = widest.clone();
                move |_: Stream, lines: &[&[u8]]| {
                    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
                    let mut b = biggest.lock().unwrap();
                    *b = (*b).max(bytes);
                    let mut w = widest.lock().unwrap();
                    *w = (*w).max(capacity(&r) as usize);
                    seen.lock()
                        .unwrap()
                        .extend(lines.iter().map(|l| l[..8].to_vec()));
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                    // Full: every page but the one being read from (a read may end inside a
                    // page) is full, as each write is one page.
                    while !done.load(Ordering::Relaxed)
                        && pending(&r) + 4096 < capacity(&r) as usize
                    {
                        assert!(std::time::Instant::now() < deadline, "the writer stalled");
                        std::thread::yield_now();
                    }
                }
            },
        };
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            pump.run(Some(r.clone()), None),
        )
        .await
        .expect("the pump ends once the pipe is closed");
        writer.join().unwrap();
        assert_eq!(*widest.lock().unwrap(), MAX_READ, "the pipe was grown");
        assert!(*biggest.lock().unwrap() > PIPE_SIZE, "reads past 64 KiB");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), total);
        assert!(
            seen.iter()
                .enumerate()
                .all(|(i, l)| *l == format!("{i:08}").into_bytes())
        );
    }

    /// A large chunk is written out in pieces: the buffer a unit keeps stays near
    /// `WRITE_BATCH`, and the file has every line.
    #[test]
    fn a_large_chunk_is_written_in_batches() {
        let dir = tempfile_dir();
        let settings = LogSettings {
            ring_lines: 3,
            max_file_bytes: u64::MAX,
            keep_files: 1,
        };
        let mut log = LogFile::open(dir.join("big.log"), settings).unwrap();
        let lines: Vec<Vec<u8>> = (0..10_000)
            .map(|i| format!("{i:06} {}", "q".repeat(93)).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = lines.iter().map(|l| l.as_slice()).collect();
        log.write_lines(SystemTime::now(), Stream::Stdout, &refs);
        assert!(
            log.buf.capacity() < 2 * WRITE_BATCH,
            "{}",
            log.buf.capacity()
        );
        let all = query(&dir.join("big.log"), 1, &Query::default()).unwrap();
        assert_eq!(all.len(), 10_000);
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, l)| l.text.starts_with(&format!("{i:06} ")))
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// At most `MAX_GROWN` pipes are grown at once; one whose reads come back small is shrunk
    /// back, and its room goes to the next that fills its pipe.
    #[tokio::test]
    async fn few_pipes_are_grown_and_a_quiet_one_gives_its_room_back() {
        let capacity = |s: &(LineSplitter, Option<AsyncFd<SharedFd>>, OwnedFd)| {
            let fd = &s.1.as_ref().unwrap().get_ref().0;
            nix::fcntl::fcntl(&**fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap() as usize
        };
        let mut pipes: Vec<_> = (0..=MAX_GROWN)
            .map(|_| {
                let (r, w) = nix::unistd::pipe().unwrap();
                let mut split = LineSplitter::new(Stream::Stdout);
                split.read_size = PIPE_SIZE;
                (split, watch_pipe(Some(Arc::new(r))), w)
            })
            .collect();
        // A full 64 KiB read on each: the first ones grow (as many as there is room for: all
        // but the last when this test is alone in its process, as under nextest).
        for (split, pipe, _) in &mut pipes {
            split.next_read_size(PIPE_SIZE, pipe.as_ref());
        }
        let grown = pipes.iter().filter(|p| p.0.grown).count();
        assert!((1..=MAX_GROWN).contains(&grown), "{grown}");
        for p in &pipes {
            assert_eq!(capacity(p), if p.0.grown { MAX_READ } else { PIPE_SIZE });
        }
        let refused = pipes
            .iter()
            .position(|p| !p.0.grown)
            .expect("one was refused");
        // The first grows quiet: its reads shrink, and below 64 KiB so does its pipe.
        let first = pipes.iter().position(|p| p.0.grown).unwrap();
        let (split, pipe, _) = &mut pipes[first];
        split.read_size = MAX_READ;
        while split.grown {
            assert!(split.read_size > 4096, "shrunk by now");
            split.next_read_size(10, pipe.as_ref());
        }
        assert_eq!(capacity(&pipes[first]), PIPE_SIZE);
        // Its room goes to the one that was refused.
        let (split, pipe, _) = &mut pipes[refused];
        split.next_read_size(PIPE_SIZE, pipe.as_ref());
        assert!(split.grown);
        assert_eq!(capacity(&pipes[refused]), MAX_READ);
    }

    /// A pipe made small (a unit of a large stack) is read at its size, grown like any other
    /// when a read fills it, and shrunk back to its own size, not the kernel's, once it quiets.
    #[tokio::test]
    async fn a_small_pipe_grows_when_full_and_shrinks_back_to_its_size() {
        const SMALL: usize = 16 << 10;
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(SMALL as _)).unwrap();
        let pipe = watch_pipe(Some(Arc::new(r)));
        let capacity = || {
            let fd = &pipe.as_ref().unwrap().get_ref().0;
            nix::fcntl::fcntl(&**fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap() as usize
        };
        let mut split = LineSplitter::new(Stream::Stdout);
        split.quiet = quiet_size(pipe.as_ref());
        assert_eq!(split.quiet, SMALL);
        // Reads that fill their room double, up to the pipe's size; a full one there grows it.
        while !split.grown {
            assert!(split.read_size <= SMALL, "{}", split.read_size);
            split.next_read_size(split.read_size, pipe.as_ref());
        }
        assert_eq!(capacity(), MAX_READ);
        // Quiet again: its reads shrink, and so does the pipe, to 16 KiB.
        split.read_size = MAX_READ;
        while split.grown {
            assert!(split.read_size > 4096, "shrunk by now");
            split.next_read_size(10, pipe.as_ref());
        }
        assert_eq!(capacity(), SMALL);
        drop(w);
    }
}
