//! Output capture. One pump task per process instance reads its stdout and stderr pipes until
//! both close, cuts the bytes into lines, and hands each line to three places: the unit's log
//! file (everything, in order, rotated by size), its in-memory ring (the last N lines), and the
//! terminal printer (which may drop lines for display, never for the file).
//!
//! A pump never waits on anything but its pipes and its own file, so a slow terminal or a
//! flooding neighbour cannot stall it, and a flooding service cannot stall anyone else.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use corral_config::LogSettings;
use corral_engine::{Event, ProbeKind, UnitId};
use regex::Regex;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::printer::Printer;

/// A line longer than this is cut into pieces of this size (never dropped).
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LogLine {
    pub time: SystemTime,
    pub stream: Stream,
    pub text: String,
}

/// A unit's log: the ring in memory and the file on disk. Shared by the pumps of successive
/// instances, so a restart continues the same file.
pub struct UnitLog {
    ring: Mutex<VecDeque<LogLine>>,
    capacity: usize,
    file: Mutex<LogFile>,
}

impl UnitLog {
    pub fn open(dir: &Path, name: &str, settings: LogSettings) -> io::Result<UnitLog> {
        Ok(UnitLog {
            ring: Mutex::new(VecDeque::new()),
            capacity: settings.ring_lines,
            file: Mutex::new(LogFile::open(dir.join(format!("{name}.log")), settings)?),
        })
    }

    /// The last `n` lines kept in memory, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter()
            .skip(ring.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    pub fn path(&self) -> PathBuf {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .path
            .clone()
    }

    fn record(&self, time: SystemTime, stream: Stream, lines: &[&[u8]]) {
        let stamp = humantime::format_rfc3339_millis(time).to_string();
        {
            let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
            file.write_lines(&stamp, stream, lines);
        }
        if self.capacity == 0 {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        for line in lines {
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(LogLine {
                time,
                stream,
                text: String::from_utf8_lossy(line).into_owned(),
            });
        }
    }
}

/// `<name>.log`, rotated to `<name>.log.1` … `.N` when it grows past the limit.
struct LogFile {
    path: PathBuf,
    file: File,
    /// One chunk's lines, formatted, so each chunk is one `write`. Empty (no allocation) while
    /// the unit is quiet, which keeps hundreds of idle services cheap.
    buf: Vec<u8>,
    size: u64,
    settings: LogSettings,
    broken: bool,
}

impl LogFile {
    fn open(path: PathBuf, settings: LogSettings) -> io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path,
            file,
            buf: Vec::new(),
            size,
            settings,
            broken: false,
        })
    }

    /// Lines go out as `<time> <out|err> <text>`. Writes are plain blocking writes to the page
    /// cache: cheaper than a hop to a blocking thread for every chunk.
    fn write_lines(&mut self, stamp: &str, stream: Stream, lines: &[&[u8]]) {
        if self.broken {
            return;
        }
        for line in lines {
            let before = self.buf.len();
            self.buf.extend_from_slice(stamp.as_bytes());
            self.buf.push(b' ');
            self.buf.extend_from_slice(stream.tag().as_bytes());
            self.buf.push(b' ');
            self.buf.extend_from_slice(line);
            self.buf.push(b'\n');
            self.size += (self.buf.len() - before) as u64;
            if self.size > self.settings.max_file_bytes
                && let Err(e) = self.write_out().and_then(|_| self.rotate())
            {
                self.fail(e);
                return;
            }
        }
        if let Err(e) = self.write_out() {
            self.fail(e);
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        let res = self.file.write_all(&self.buf);
        self.buf.clear();
        res
    }

    fn fail(&mut self, e: io::Error) {
        eprintln!(
            "corral: cannot write `{}`: {e}; logging to it stops",
            self.path.display()
        );
        self.broken = true;
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
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// What a pump watches the output for.
#[derive(Clone, Default)]
pub struct Watch {
    /// Report `Event::LogReady` on the first match.
    pub log_ready: Option<Regex>,
    /// Report a passing readiness probe on the first match.
    pub readiness: Option<Regex>,
}

pub struct Pump {
    pub unit: UnitId,
    pub instance: u64,
    pub log: Arc<UnitLog>,
    pub printer: Printer,
    pub watch: Watch,
    /// Delivers events to the supervisor.
    pub events: Box<dyn Fn(Event) + Send + Sync>,
}

/// Splits a byte stream into lines, carrying a partial line between reads.
struct LineSplitter {
    stream: Stream,
    carry: Vec<u8>,
}

impl LineSplitter {
    /// Complete lines in `carry + chunk`; what is left waits for the next chunk. Lines over
    /// `MAX_LINE` are cut.
    fn split<'a>(&'a mut self, chunk: &'a [u8], out: &mut Vec<Vec<u8>>) {
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.carry);
            line.extend_from_slice(&rest[..nl]);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            push_cut(line, out);
            rest = &rest[nl + 1..];
        }
        self.carry.extend_from_slice(rest);
        while self.carry.len() >= MAX_LINE {
            let tail = self.carry.split_off(MAX_LINE);
            out.push(std::mem::replace(&mut self.carry, tail));
        }
    }

    fn finish(&mut self, out: &mut Vec<Vec<u8>>) {
        if !self.carry.is_empty() {
            push_cut(std::mem::take(&mut self.carry), out);
        }
    }
}

fn push_cut(line: Vec<u8>, out: &mut Vec<Vec<u8>>) {
    if line.len() <= MAX_LINE {
        out.push(line);
    } else {
        out.extend(line.chunks(MAX_LINE).map(<[u8]>::to_vec));
    }
}

impl Pump {
    /// Read both pipes until both are closed.
    pub async fn run(mut self, stdout: Option<pipe::Receiver>, stderr: Option<pipe::Receiver>) {
        let mut out = stdout;
        let mut err = stderr;
        let mut out_split = LineSplitter {
            stream: Stream::Stdout,
            carry: Vec::new(),
        };
        let mut err_split = LineSplitter {
            stream: Stream::Stderr,
            carry: Vec::new(),
        };
        // Buffers start small and grow while a stream keeps filling them: an idle service costs
        // 8 KiB here, a flooding one reads 64 KiB at a time.
        let mut out_buf = vec![0u8; 4096];
        let mut err_buf = vec![0u8; 4096];
        let mut lines = Vec::new();
        while out.is_some() || err.is_some() {
            let (n, which) = tokio::select! {
                r = read_some(&mut out, &mut out_buf), if out.is_some() => (r, Stream::Stdout),
                r = read_some(&mut err, &mut err_buf), if err.is_some() => (r, Stream::Stderr),
            };
            let (splitter, buf, pipe) = match which {
                Stream::Stdout => (&mut out_split, &mut out_buf, &mut out),
                Stream::Stderr => (&mut err_split, &mut err_buf, &mut err),
            };
            lines.clear();
            match n {
                0 => {
                    splitter.finish(&mut lines);
                    *pipe = None;
                }
                n => {
                    splitter.split(&buf[..n], &mut lines);
                    if n == buf.len() && buf.len() < 64 * 1024 {
                        buf.resize(buf.len() * 2, 0);
                    }
                }
            }
            let stream = splitter.stream;
            if !lines.is_empty() {
                self.deliver(stream, &lines);
            }
        }
    }

    fn deliver(&mut self, stream: Stream, lines: &[Vec<u8>]) {
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        self.log.record(SystemTime::now(), stream, &refs);
        for line in lines {
            self.printer.line(self.unit, stream, line);
        }
        if self.watch.log_ready.is_some() || self.watch.readiness.is_some() {
            for line in lines {
                let text = String::from_utf8_lossy(line);
                if self
                    .watch
                    .log_ready
                    .as_ref()
                    .is_some_and(|r| r.is_match(&text))
                {
                    self.watch.log_ready = None;
                    (self.events)(Event::LogReady {
                        unit: self.unit,
                        instance: self.instance,
                    });
                }
                if self
                    .watch
                    .readiness
                    .as_ref()
                    .is_some_and(|r| r.is_match(&text))
                {
                    self.watch.readiness = None;
                    (self.events)(Event::ProbeResult {
                        unit: self.unit,
                        instance: self.instance,
                        probe: ProbeKind::Readiness,
                        ok: true,
                        detail: format!("line matched: {text}"),
                    });
                }
            }
        }
    }
}

/// Read from a pipe; an error counts as end of stream.
async fn read_some(pipe: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> usize {
    match pipe {
        Some(p) => p.read(buf).await.unwrap_or(0),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter {
            stream: Stream::Stdout,
            carry: Vec::new(),
        };
        let mut out = Vec::new();
        for c in chunks {
            s.split(c, &mut out);
        }
        s.finish(&mut out);
        out
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
    fn long_lines_are_cut_not_dropped() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.push(b'\n');
        let out = split_all(&[&input[..1000], &input[1000..]]);
        assert_eq!(out.len(), 3);
        assert_eq!(out.concat(), long);
    }

    #[test]
    fn rotation_keeps_n_files() {
        let dir = tempfile_dir();
        let settings = LogSettings {
            ring_lines: 3,
            max_file_bytes: 100,
            keep_files: 2,
        };
        let log = UnitLog::open(&dir, "svc", settings).unwrap();
        let line = [b'y'; 40];
        for _ in 0..20 {
            log.record(SystemTime::now(), Stream::Stdout, &[&line]);
        }
        assert!(dir.join("svc.log.1").exists());
        assert!(dir.join("svc.log.2").exists());
        assert!(!dir.join("svc.log.3").exists());
        assert_eq!(log.tail(10).len(), 3);
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("corral-logs-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }
}
