//! The keeper: a small process that holds the output pipes of every service and writes their
//! log files, so that the daemon can die without losing a line.
//!
//! ## Why a separate process
//!
//! A service writes to a pipe. If the only reader of that pipe were the daemon, `kill -9` of the
//! daemon would close the read end: the service's next write gets EPIPE (or SIGPIPE kills it),
//! and whatever the daemon had read but not yet written to disk is gone. So the daemon creates
//! each generation's stdout/stderr pipes, hands the read ends to the keeper over a Unix socket
//! (`SCM_RIGHTS`), and closes its own copies. The keeper reads them, timestamps every line,
//! writes it to `.corral/logs/NAME.log` *first*, and then offers it to the daemon ("the tap") for
//! the terminal and `log_ready` patterns — or, where the daemon needs neither (a detached daemon,
//! a unit without patterns), only news that lines were written, which wakes `logs -f` followers
//! (they read the file).
//!
//! When the daemon dies, the keeper keeps reading and writing files; services never notice.
//! A new daemon connects to `keeper.sock`, becomes the tap, and the log file has every line
//! exactly once — it was only ever written by one process, in order.
//!
//! ## Two holders (as s6-fdholder)
//!
//! The daemon keeps its own copy of every read end it handed over, and a new daemon gets copies
//! from the keeper (`HELD`, sent when it connects). So either process may die: a pipe always
//! has a reader, no writer ever sees EPIPE, and the survivor hands the pipes to the restarted
//! peer — a new keeper gets them from the daemon (`ATTACH` again) and continues the log files
//! where the dead one stopped; only lines it had read but not yet written are lost (it writes
//! each chunk before it sends it on, so that window is one chunk).
//!
//! A daemon that is starting binds `keeper.sock` itself and hands the listening socket to the
//! keeper it starts as its stdin (as inetd does): it connects at once, without waiting for the
//! keeper to start. (One started later, for a keeper that died, binds its own.)
//!
//! It ends by itself once no pipe is left open and no daemon is connected (or, when started but
//! never used, after a short grace period). One keeper per state dir, guarded by an flock.
//!
//! ## Wire format
//!
//! Frames in both directions: `u32 length (LE, of what follows) | u8 kind | payload`. File
//! descriptors ride along with the frame that uses them; since the kernel delivers them no later
//! than the first byte of that frame, a FIFO of received descriptors matches them up.
//! - daemon → keeper `ATTACH`: JSON-free fixed fields (see [`Attach`]) + 2 fds (stdout, stderr).
//! - daemon → keeper `WANT`: a generation, whether its lines are wanted (`LINES`) or only news of
//!   them (`NEWS`); lines until said otherwise, and again for each daemon that connects.
//! - keeper → daemon `LINES`: one chunk's complete lines of one stream of one generation.
//! - keeper → daemon `NEWS`: a generation whose lines are not wanted wrote some (one per chunk).
//! - keeper → daemon `EOF`: both pipes of a generation are closed; all its lines were sent.
//! - keeper → daemon `HELD`: the same fields as `ATTACH` + 2 fds: copies of the read ends it
//!   holds, one frame per generation, sent to each daemon as it connects.
//! - keeper → daemon `REFUSED`: the same fields as `ATTACH`, no fds: an `ATTACH` whose
//!   descriptors did not arrive (the keeper is out of open files). The daemon reads those pipes
//!   itself, with its own copies, so the service does not block on a full pipe.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_config::LogSettings;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::logs::{LogFile, Pump, Stream};
use corral_proto::paths::SocketPath;

const ATTACH: u8 = 1;
/// Whether the daemon wants a generation's lines themselves (`LINES`) or only news that some
/// were written (`NEWS`). Lines are wanted until it says otherwise, and again when a new daemon
/// connects: a keeper and a daemon of different versions still work together (each ignores
/// the frames it does not know).
const WANT: u8 = 2;
const LINES: u8 = 10;
const EOF: u8 = 11;
const HELD: u8 = 12;
const REFUSED: u8 = 13;
const NEWS: u8 = 14;
/// A generation's log file stopped (or started again) being written: what to tell the user.
const TROUBLE: u8 = 15;

/// A frame larger than this is a protocol error, not an allocation.
const MAX_FRAME: usize = 16 << 20;

/// How long a keeper nobody has used waits before it ends.
const IDLE_GRACE: Duration = Duration::from_secs(10);

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("keeper.sock")
}

/// What the daemon tells the keeper about a new generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attach {
    pub unit: String,
    pub generation: u64,
    pub settings: LogSettings,
    /// The log file (`.corral/logs/NAME.log`, or the unit's `log_file`).
    pub path: PathBuf,
}

impl Attach {
    fn encode(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let mut p = Vec::new();
        p.extend_from_slice(&self.generation.to_le_bytes());
        p.extend_from_slice(&self.settings.max_file_bytes.to_le_bytes());
        p.extend_from_slice(&self.settings.keep_files.to_le_bytes());
        p.extend_from_slice(&(self.unit.len() as u32).to_le_bytes());
        p.extend_from_slice(self.unit.as_bytes());
        p.extend_from_slice(self.path.as_os_str().as_bytes());
        p
    }

    fn decode(p: &[u8]) -> Option<Attach> {
        use std::os::unix::ffi::OsStrExt;
        let generation = u64::from_le_bytes(p.get(0..8)?.try_into().ok()?);
        let max_file_bytes = u64::from_le_bytes(p.get(8..16)?.try_into().ok()?);
        let keep_files = u32::from_le_bytes(p.get(16..20)?.try_into().ok()?);
        let len = u32::from_le_bytes(p.get(20..24)?.try_into().ok()?) as usize;
        let unit = std::str::from_utf8(p.get(24..24usize.checked_add(len)?)?)
            .ok()?
            .to_string();
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(p.get(24 + len..)?));
        if !path.is_absolute() {
            return None;
        }
        Some(Attach {
            unit,
            generation,
            path,
            settings: LogSettings {
                ring_lines: 0,
                max_file_bytes,
                keep_files,
            },
        })
    }
}

/// What the keeper tells the daemon.
#[derive(Debug)]
pub enum TapMsg {
    Lines {
        unit: String,
        generation: u64,
        stream: Stream,
        time: SystemTime,
        lines: Lines,
    },
    Eof {
        unit: String,
        generation: u64,
    },
    /// Lines of a generation whose lines the daemon does not want were written to its log.
    News {
        unit: String,
        generation: u64,
    },
    /// A copy of the read ends of a generation the keeper holds (for a daemon that connects
    /// after the one that started it).
    Held {
        attach: Attach,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// The keeper could not take a generation's pipes (`REFUSED`): the daemon reads them.
    Refused {
        attach: Attach,
    },
    /// A generation's log file could not be written, or is written again (a full disk).
    Trouble {
        unit: String,
        generation: u64,
        trouble: crate::logs::LogTrouble,
    },
    /// The connection to the keeper is gone (it died, or the daemon is ending).
    Lost,
}

impl TapMsg {
    /// Lines read by the daemon itself (see [`TapMsg::Refused`]), as the keeper would send them.
    pub fn lines(
        unit: &str,
        generation: u64,
        stream: Stream,
        time: SystemTime,
        lines: &[&[u8]],
    ) -> Option<TapMsg> {
        let mut frame = lines_frame(unit, generation, stream, time, lines);
        frame.drain(..5);
        decode_tap(LINES, frame)
    }
}

fn lines_frame(
    unit: &str,
    generation: u64,
    stream: Stream,
    time: SystemTime,
    lines: &[&[u8]],
) -> Vec<u8> {
    let ms = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body: usize = lines.iter().map(|l| l.len() + 4).sum();
    let mut p = Vec::with_capacity(19 + unit.len() + body + 5);
    p.extend_from_slice(&[0; 5]);
    p.extend_from_slice(&generation.to_le_bytes());
    p.push(matches!(stream, Stream::Stderr) as u8);
    p.extend_from_slice(&ms.to_le_bytes());
    p.extend_from_slice(&(unit.len() as u16).to_le_bytes());
    p.extend_from_slice(unit.as_bytes());
    for l in lines {
        p.extend_from_slice(&(l.len() as u32).to_le_bytes());
        p.extend_from_slice(l);
    }
    seal(p, LINES)
}

/// A frame of a generation and its unit's name (`EOF`, `NEWS`).
fn unit_frame(kind: u8, unit: &str, generation: u64) -> Vec<u8> {
    let mut p = vec![0; 5];
    p.extend_from_slice(&generation.to_le_bytes());
    p.extend_from_slice(unit.as_bytes());
    seal(p, kind)
}

/// `TROUBLE`: the generation, whether writing fails (1) or works again (0), the lines missing,
/// the unit's name (length first), and why it fails.
fn trouble_frame(unit: &str, generation: u64, trouble: &crate::logs::LogTrouble) -> Vec<u8> {
    use crate::logs::LogTrouble;
    let (failing, missing, why) = match trouble {
        LogTrouble::Failing(why) => (1u8, 0u64, why.as_str()),
        LogTrouble::Recovered { missing } => (0, *missing, ""),
    };
    let mut p = vec![0; 5];
    p.extend_from_slice(&generation.to_le_bytes());
    p.push(failing);
    p.extend_from_slice(&missing.to_le_bytes());
    p.extend_from_slice(&(unit.len() as u16).to_le_bytes());
    p.extend_from_slice(unit.as_bytes());
    p.extend_from_slice(why.as_bytes());
    seal(p, TROUBLE)
}

fn want_frame(unit: &str, generation: u64, lines: bool) -> Vec<u8> {
    let mut p = vec![0; 5];
    p.extend_from_slice(&generation.to_le_bytes());
    p.push(lines as u8);
    p.extend_from_slice(unit.as_bytes());
    seal(p, WANT)
}

/// A `WANT` frame's generation, unit and whether lines are wanted.
fn decode_want(p: &[u8]) -> Option<(u64, String, bool)> {
    let generation = u64::from_le_bytes(p.get(0..8)?.try_into().ok()?);
    let lines = *p.get(8)? != 0;
    let unit = std::str::from_utf8(p.get(9..)?).ok()?.to_string();
    Some((generation, unit, lines))
}

/// Fill in the header of a frame built with 5 bytes of room in front.
fn seal(mut p: Vec<u8>, kind: u8) -> Vec<u8> {
    let len = (p.len() - 4) as u32;
    p[..4].copy_from_slice(&len.to_le_bytes());
    p[4] = kind;
    p
}

/// One chunk's lines as a `LINES` frame carried them: the frame's bytes and where each line is
/// in them (no allocation per line).
#[derive(Debug)]
pub struct Lines {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Lines {
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.spans.iter().map(|&(a, b)| &self.bytes[a..b])
    }
}

fn decode_tap(kind: u8, p: Vec<u8>) -> Option<TapMsg> {
    let generation = u64::from_le_bytes(p.get(0..8)?.try_into().ok()?);
    match kind {
        LINES => {
            let stream = if *p.get(8)? == 1 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            let ms = u64::from_le_bytes(p.get(9..17)?.try_into().ok()?);
            let name_len = u16::from_le_bytes(p.get(17..19)?.try_into().ok()?) as usize;
            let unit = String::from_utf8_lossy(p.get(19..19 + name_len)?).into_owned();
            let mut at = 19 + name_len;
            let mut spans = Vec::new();
            while at < p.len() {
                let n = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
                let end = (at + 4).checked_add(n).filter(|end| *end <= p.len())?;
                spans.push((at + 4, end));
                at = end;
            }
            Some(TapMsg::Lines {
                unit,
                generation,
                stream,
                time: UNIX_EPOCH + Duration::from_millis(ms),
                lines: Lines { bytes: p, spans },
            })
        }
        EOF => Some(TapMsg::Eof {
            unit: String::from_utf8_lossy(&p[8..]).into_owned(),
            generation,
        }),
        NEWS => Some(TapMsg::News {
            unit: String::from_utf8_lossy(&p[8..]).into_owned(),
            generation,
        }),
        TROUBLE => {
            let failing = *p.get(8)? == 1;
            let missing = u64::from_le_bytes(p.get(9..17)?.try_into().ok()?);
            let name_len = u16::from_le_bytes(p.get(17..19)?.try_into().ok()?) as usize;
            let unit = String::from_utf8_lossy(p.get(19..19 + name_len)?).into_owned();
            let why = String::from_utf8_lossy(&p[19 + name_len..]).into_owned();
            Some(TapMsg::Trouble {
                unit,
                generation,
                trouble: match failing {
                    true => crate::logs::LogTrouble::Failing(why),
                    false => crate::logs::LogTrouble::Recovered { missing },
                },
            })
        }
        _ => None,
    }
}

/// Reads frames from a stream socket, collecting the descriptors that come with them.
struct FrameReader {
    sock: UnixStream,
    buf: Vec<u8>,
    /// In the order they came, two per frame that carries any; `None` where the kernel could
    /// not give them (out of open files: `MSG_CTRUNC`), so later frames still get their own.
    fds: VecDeque<Option<OwnedFd>>,
}

impl FrameReader {
    fn new(sock: UnixStream) -> FrameReader {
        FrameReader {
            sock,
            buf: Vec::new(),
            fds: VecDeque::new(),
        }
    }

    /// Whether lines of `unit`'s `generation` are wanted, if the frame already read after its
    /// `ATTACH` says so (a daemon sends the two together: taken with the attach, the answer
    /// holds from the first line, instead of racing the pump the attach starts).
    fn take_want_for(&mut self, unit: &str, generation: u64) -> Option<bool> {
        let len = u32::from_le_bytes(self.buf.get(..4)?.try_into().ok()?) as usize;
        if *self.buf.get(4)? != WANT || self.buf.len() < 4 + len || len == 0 {
            return None;
        }
        let (g, u, lines) = decode_want(&self.buf[5..4 + len])?;
        if g != generation || u != unit {
            return None;
        }
        self.buf.drain(..4 + len);
        Some(lines)
    }

    /// The next frame, or None at end of stream.
    fn next(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_le_bytes(self.buf[..4].try_into().unwrap_or_default()) as usize;
                if len == 0 || len > MAX_FRAME {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad frame length",
                    ));
                }
                if self.buf.len() >= 4 + len {
                    let kind = self.buf[4];
                    let payload = self.buf[5..4 + len].to_vec();
                    self.buf.drain(..4 + len);
                    return Ok(Some((kind, payload)));
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            let mut cmsg = nix::cmsg_space!([RawFd; 8]);
            let mut iov = [IoSliceMut::new(&mut chunk)];
            let msg = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let n = msg.bytes;
            let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
            let mut got = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        // SAFETY: the kernel just installed these descriptors for us; nothing
                        // else owns them.
                        got.extend(
                            fds.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
            }
            if truncated {
                // A read returns the descriptors of one message at most (the kernel stops at
                // the next one that carries any): that frame's pair is lost, the rest kept.
                drop(got);
                self.fds.extend([None, None]);
            } else {
                self.fds.extend(got.into_iter().map(Some));
            }
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// An `ATTACH` or `HELD` frame.
fn attach_frame(attach: &Attach, kind: u8) -> Vec<u8> {
    let mut frame = vec![0; 5];
    frame.extend_from_slice(&attach.encode());
    seal(frame, kind)
}

/// Send `frame` with two descriptors riding on its first byte.
fn send_with_fds(
    sock: &UnixStream,
    frame: &[u8],
    stdout: &OwnedFd,
    stderr: &OwnedFd,
) -> io::Result<()> {
    let fds = [stdout.as_raw_fd(), stderr.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(frame)];
    let sent = loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut s = sock;
    s.write_all(&frame[sent..])
}

// ---------------------------------------------------------------------------------------------
// Daemon side

/// Whether a keeper runs for this state dir: it holds `keeper.lock`. (Asked without connecting,
/// which the keeper would take for a daemon.)
pub fn running(state_dir: &Path) -> bool {
    let Ok(file) = crate::statedir::open_rw(&state_dir.join("keeper.lock")) else {
        return false;
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

/// The daemon's connection to its keeper.
pub struct KeeperLink {
    sock: UnixStream,
    _path: SocketPath,
}

impl KeeperLink {
    /// Connect to the keeper of `state_dir`, starting one with `start` if none answers.
    /// `tap` receives what the keeper sends, on a thread of its own.
    pub fn connect(
        state_dir: &Path,
        start: impl FnOnce() -> io::Result<()>,
        tap: impl Fn(TapMsg) + Send + 'static,
    ) -> io::Result<KeeperLink> {
        let path = SocketPath::new(&socket_path(state_dir))?;
        let sock = match UnixStream::connect(path.as_path()) {
            Ok(s) => s,
            Err(_) => {
                start()?;
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                loop {
                    match UnixStream::connect(path.as_path()) {
                        Ok(s) => break s,
                        Err(e) if std::time::Instant::now() > deadline => {
                            return Err(io::Error::new(
                                e.kind(),
                                format!("the log keeper did not start: {e}"),
                            ));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            }
        };
        let mut reader = FrameReader::new(sock.try_clone()?);
        std::thread::Builder::new()
            .name("keeper-tap".into())
            .spawn(move || {
                while let Ok(Some((kind, payload))) = reader.next() {
                    if kind == HELD {
                        let fds = (
                            reader.fds.pop_front().flatten(),
                            reader.fds.pop_front().flatten(),
                        );
                        if let (Some(attach), (Some(stdout), Some(stderr))) =
                            (Attach::decode(&payload), fds)
                        {
                            tap(TapMsg::Held {
                                attach,
                                stdout,
                                stderr,
                            });
                        }
                    } else if kind == REFUSED {
                        if let Some(attach) = Attach::decode(&payload) {
                            tap(TapMsg::Refused { attach });
                        }
                    } else if let Some(msg) = decode_tap(kind, payload) {
                        tap(msg);
                    }
                }
                tap(TapMsg::Lost);
            })?;
        Ok(KeeperLink { sock, _path: path })
    }

    /// Hand a generation's output pipes to the keeper, saying whether its lines are wanted (or
    /// only news of them). The caller closes its copies afterwards.
    pub fn attach(
        &self,
        attach: &Attach,
        stdout: &OwnedFd,
        stderr: &OwnedFd,
        lines: bool,
    ) -> io::Result<()> {
        let mut frames = attach_frame(attach, ATTACH);
        // Lines are the keeper's default: only the other answer costs bytes (in the same send).
        if !lines {
            frames.extend(want_frame(&attach.unit, attach.generation, false));
        }
        send_with_fds(&self.sock, &frames, stdout, stderr)
    }

    /// Say whether a generation's lines are wanted (one the keeper already holds).
    pub fn want(&self, unit: &str, generation: u64, lines: bool) -> io::Result<()> {
        (&self.sock).write_all(&want_frame(unit, generation, lines))
    }
}

impl Drop for KeeperLink {
    /// Shut the connection down for both ends: the tap thread's read returns, and the keeper
    /// sees the daemon leave (and ends if it holds no pipe).
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------------------------
// Keeper side

/// The keeper process: `corral __keeper STATE_DIR`. Returns when there is nothing left to keep.
pub fn main(state_dir: &Path) -> io::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // A Ctrl-C or a closed terminal is for the daemon to act on, not for the keeper.
    for sig in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGPIPE] {
        // SAFETY: setting a signal to SIG_IGN installs no handler code.
        unsafe { signal(sig, SigHandler::SigIgn) }.map_err(io::Error::from)?;
    }
    // A panic anywhere ends the keeper. Caught with its task, it would leave that task's pipes
    // held and unread — the service blocks once one is full; ended, it is a keeper death the
    // daemon recovers from (a new keeper gets every pipe).
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    let lock_file = crate::statedir::open_rw(&state_dir.join("keeper.lock"))?;
    let mut lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| io::Error::new(io::ErrorKind::AddrInUse, "another keeper runs here"))?;
    // The holder's PID, for people (and the benchmarks) looking for the keeper.
    crate::statedir::write_pid(&mut lock)?;
    let path = SocketPath::new(&socket_path(state_dir))?;
    let listener = match inherited_listener() {
        Some(l) => l,
        None => {
            let _ = std::fs::remove_file(path.as_path());
            let l = crate::sockpath::bind_private(|| {
                std::os::unix::net::UnixListener::bind(path.as_path())
            })?;
            std::fs::set_permissions(
                socket_path(state_dir),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )?;
            l
        }
    };
    let log_dir = state_dir.join("logs");
    crate::statedir::ensure_dir(&log_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(keep(listener, log_dir));
    let _ = std::fs::remove_file(path.as_path());
    result
}

/// The socket the daemon bound for us and handed over as stdin (see `spawn_keeper`); None when
/// stdin is anything else (a keeper started another way binds its socket itself).
fn inherited_listener() -> Option<std::os::unix::net::UnixListener> {
    use nix::sys::socket::{
        AddressFamily, SockaddrLike, UnixAddr, getsockname, getsockopt, sockopt,
    };
    let stdin = std::io::stdin();
    let listening = getsockopt(&stdin, sockopt::AcceptConn).ok()?;
    let unix = getsockname::<UnixAddr>(stdin.as_raw_fd())
        .is_ok_and(|a| a.family() == Some(AddressFamily::Unix));
    if !(listening && unix) {
        return None;
    }
    // SAFETY: stdin is a listening Unix socket that nothing else in the keeper uses; the
    // listener owns descriptor 0 from here on.
    Some(unsafe { std::os::unix::net::UnixListener::from_raw_fd(0) })
}

enum KeeperMsg {
    Connected,
    /// With whether its lines are wanted from the start.
    Attach(Attach, OwnedFd, OwnedFd, bool),
    /// An `ATTACH` whose descriptors did not arrive.
    Refused(Attach),
    Want {
        unit: String,
        generation: u64,
        lines: bool,
    },
    Disconnected(u64),
}

/// A frame for the daemon, with the descriptors it carries (`HELD`).
enum Out {
    Frame(Vec<u8>),
    WithFds(Vec<u8>, Arc<OwnedFd>, Arc<OwnedFd>),
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Frame(f) | Out::WithFds(f, ..) => f.len(),
        }
    }
}

/// The most bytes of frames waiting for the daemon. The queue also has a bound in frames, but
/// a frame of lines may be 5 MiB (a `MAX_READ` of empty lines): 16,384 of those would be more
/// memory than the machine has.
const MAX_QUEUED: usize = 64 << 20;
const _: () = assert!(5 * crate::logs::MAX_READ + 64 * 1024 <= MAX_FRAME);

/// Where pumps send frames for the daemon: a queue to one writer thread, bounded in frames and
/// in bytes (`queued`, which the writer takes back). When the daemon is away or slow, line
/// frames are dropped here — they are already in the log file.
#[derive(Clone)]
struct Tap {
    tx: SyncSender<Out>,
    dropped: Arc<AtomicU64>,
    queued: Arc<AtomicUsize>,
}

impl Tap {
    fn new(tx: SyncSender<Out>) -> Tap {
        Tap {
            tx,
            dropped: Arc::default(),
            queued: Arc::default(),
        }
    }

    fn send(&self, frame: Vec<u8>) {
        let len = frame.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED
            || self.tx.try_send(Out::Frame(frame)).is_err()
        {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Descriptors are never dropped: this one waits for room.
    fn send_fds(&self, frame: Vec<u8>, stdout: Arc<OwnedFd>, stderr: Arc<OwnedFd>) {
        let len = frame.len();
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(Out::WithFds(frame, stdout, stderr)).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// An end of output is never dropped either (the daemon waits for it before it ends), nor
    /// a refusal (the daemon must read those pipes): these wait for room without holding up
    /// the other pumps on this thread.
    async fn send_kept(&self, frame: Vec<u8>) {
        let len = frame.len();
        self.queued.fetch_add(len, Ordering::Relaxed);
        let mut out = Out::Frame(frame);
        loop {
            match self.tx.try_send(out) {
                Err(TrySendError::Full(back)) => out = back,
                Err(TrySendError::Disconnected(_)) => {
                    self.queued.fetch_sub(len, Ordering::Relaxed);
                    return;
                }
                Ok(()) => return,
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A generation's pipes as the keeper holds them: what they are, the read ends, and whether the
/// daemon wants their lines (shared with the pump).
type HeldPipes = (Attach, Arc<OwnedFd>, Arc<OwnedFd>, Arc<AtomicBool>);

/// A unit's log file; the directories of a `log_file` outside the state dir are made (0700)
/// when missing.
pub(crate) fn open_log(log_dir: &Path, a: &Attach) -> io::Result<LogFile> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = a.path.parent()
        && parent != log_dir
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match LogFile::open(a.path.clone(), a.settings) {
        // The log dir, made as the keeper started, was removed since (to clear the logs).
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            crate::statedir::ensure_dir(log_dir)?;
            LogFile::open(a.path.clone(), a.settings)
        }
        opened => opened,
    }
}

async fn keep(listener: std::os::unix::net::UnixListener, log_dir: PathBuf) -> io::Result<()> {
    let (msg_tx, mut msg_rx) = tokio::sync::mpsc::unbounded_channel::<KeeperMsg>();
    let current: Arc<Mutex<Option<(u64, UnixStream)>>> = Arc::default();

    // Accept daemons on a thread; the newest connection is the tap.
    {
        let current = current.clone();
        let msg_tx = msg_tx.clone();
        std::thread::Builder::new()
            .name("keeper-accept".into())
            .spawn(move || {
                let mut next_id = 0u64;
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    next_id += 1;
                    let id = next_id;
                    let Ok(writer) = conn.try_clone() else {
                        continue;
                    };
                    *current.lock().unwrap_or_else(|e| e.into_inner()) = Some((id, writer));
                    let _ = msg_tx.send(KeeperMsg::Connected);
                    let msg_tx = msg_tx.clone();
                    let _ = std::thread::Builder::new()
                        .name("keeper-conn".into())
                        .spawn(move || read_daemon(conn, id, msg_tx));
                }
            })?;
    }

    // Write frames to whichever daemon is connected.
    let (frame_tx, frame_rx) = sync_channel::<Out>(16 * 1024);
    let tap = Tap::new(frame_tx);
    {
        let current = current.clone();
        // Not a `Tap`: its sender would keep the queue open after the last pump's.
        let queued = tap.queued.clone();
        std::thread::Builder::new()
            .name("keeper-writer".into())
            .spawn(move || {
                for out in frame_rx {
                    queued.fetch_sub(out.len(), Ordering::Relaxed);
                    let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some((_, sock)) = cur.as_mut() {
                        let written = match &out {
                            Out::Frame(frame) => sock.write_all(frame),
                            Out::WithFds(frame, stdout, stderr) => {
                                send_with_fds(sock, frame, stdout, stderr)
                            }
                        };
                        if written.is_err() {
                            *cur = None;
                        }
                    }
                }
            })?;
    }

    // A unit's file stays open while one of its instances has a pipe open.
    let mut files: HashMap<String, (Arc<Mutex<LogFile>>, usize)> = HashMap::new();
    // The read ends being pumped, for each daemon that connects (`HELD`): shared with the pump,
    // not copied (a copy per pipe made five descriptors per unit, and 5,000 services ran the
    // keeper out of its open-file limit).
    let mut held: HashMap<(String, u64), HeldPipes> = HashMap::new();
    let mut pumps = tokio::task::JoinSet::new();
    let mut daemons = 0usize;
    let idle = tokio::time::sleep(IDLE_GRACE);
    tokio::pin!(idle);
    let mut used = false;
    loop {
        if used && daemons == 0 && pumps.is_empty() {
            return Ok(());
        }
        tokio::select! {
            msg = msg_rx.recv() => match msg {
                Some(KeeperMsg::Connected) => {
                    daemons += 1;
                    used = true;
                    // The newest daemon is the current one: it gets copies of every pipe, and
                    // lines until it says what it wants.
                    for (attach, out, err, lines) in held.values() {
                        lines.store(true, Ordering::Relaxed);
                        tap.send_fds(attach_frame(attach, HELD), out.clone(), err.clone());
                    }
                }
                Some(KeeperMsg::Disconnected(id)) => {
                    daemons = daemons.saturating_sub(1);
                    let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
                    if cur.as_ref().is_some_and(|(c, _)| *c == id) {
                        *cur = None;
                    }
                }
                Some(KeeperMsg::Refused(a)) => tap.send_kept(attach_frame(&a, REFUSED)).await,
                Some(KeeperMsg::Want { unit, generation, lines }) => {
                    if let Some((.., wanted)) = held.get(&(unit, generation)) {
                        wanted.store(lines, Ordering::Relaxed);
                    }
                }
                Some(KeeperMsg::Attach(a, out, err, lines)) => {
                    let key = (a.unit.clone(), a.generation);
                    if held.contains_key(&key) {
                        // Already pumped (a daemon re-attaching what it holds): one reader.
                        continue;
                    }
                    let (out, err) = (Arc::new(out), Arc::new(err));
                    let wanted = Arc::new(AtomicBool::new(lines));
                    held.insert(key, (a.clone(), out.clone(), err.clone(), wanted.clone()));
                    let file = match files.get_mut(&a.unit) {
                        Some((f, users)) => {
                            *users += 1;
                            Some(f.clone())
                        }
                        None => match open_log(&log_dir, &a) {
                            Ok(f) => {
                                let f = Arc::new(Mutex::new(f));
                                files.insert(a.unit.clone(), (f.clone(), 1));
                                Some(f)
                            }
                            // The pipes are still read (the service must not block or get
                            // EPIPE); the lines go to the daemon only.
                            Err(e) => {
                                let trouble = crate::logs::LogTrouble::Failing(e.to_string());
                                tap.send(trouble_frame(&a.unit, a.generation, &trouble));
                                None
                            }
                        },
                    };
                    let (out, err) = (Some(out), Some(err));
                    let tap = tap.clone();
                    pumps.spawn(async move {
                        let (unit, generation) = (a.unit, a.generation);
                        let sink = {
                            let unit = unit.clone();
                            let tap = tap.clone();
                            move |stream: Stream, lines: &[&[u8]]| {
                                let now = SystemTime::now();
                                let trouble = file.as_ref().and_then(|file| {
                                    file.lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .write_lines(now, stream, lines)
                                });
                                if let Some(trouble) = trouble {
                                    tap.send(trouble_frame(&unit, generation, &trouble));
                                }
                                // The lines are in the file: a daemon that only follows it
                                // (`logs -f`, no terminal, no pattern) needs just the news.
                                tap.send(if wanted.load(Ordering::Relaxed) {
                                    lines_frame(&unit, generation, stream, now, lines)
                                } else {
                                    unit_frame(NEWS, &unit, generation)
                                });
                            }
                        };
                        Pump { sink }.run(out, err).await;
                        tap.send_kept(unit_frame(EOF, &unit, generation)).await;
                        (unit, generation)
                    });
                }
                None => return Ok(()),
            },
            Some(done) = pumps.join_next(), if !pumps.is_empty() => {
                if let Ok((unit, generation)) = &done {
                    held.remove(&(unit.clone(), *generation));
                }
                if let Ok((unit, _)) = done
                    && let Some((_, users)) = files.get_mut(&unit)
                {
                    *users -= 1;
                    if *users == 0 {
                        files.remove(&unit);
                    }
                }
            }
            _ = &mut idle, if !used => return Ok(()),
        }
    }
}

/// Read ATTACH frames from one daemon until it disconnects.
fn read_daemon(conn: UnixStream, id: u64, tx: tokio::sync::mpsc::UnboundedSender<KeeperMsg>) {
    let mut reader = FrameReader::new(conn);
    while let Ok(Some((kind, payload))) = reader.next() {
        if kind == WANT {
            if let Some((generation, unit, lines)) = decode_want(&payload) {
                let _ = tx.send(KeeperMsg::Want {
                    unit,
                    generation,
                    lines,
                });
            }
            continue;
        }
        if kind != ATTACH {
            continue;
        }
        let fds = (
            reader.fds.pop_front().flatten(),
            reader.fds.pop_front().flatten(),
        );
        let Some(a) = Attach::decode(&payload) else {
            continue;
        };
        match fds {
            (Some(out), Some(err)) => {
                let lines = reader.take_want_for(&a.unit, a.generation).unwrap_or(true);
                let _ = tx.send(KeeperMsg::Attach(a, out, err, lines));
            }
            _ => {
                crate::say!(
                    "keeper: the pipes of `{}` did not arrive (out of open files?): the daemon \
                     reads them itself",
                    a.unit
                );
                let _ = tx.send(KeeperMsg::Refused(a));
            }
        }
    }
    let _ = tx.send(KeeperMsg::Disconnected(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let lines: Vec<&[u8]> = vec![b"one", b"", &[0xff, b'\n']];
        let f = lines_frame(
            "api",
            7,
            Stream::Stderr,
            UNIX_EPOCH + Duration::from_millis(1234),
            &lines,
        );
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&f).unwrap();
        (&a).write_all(&unit_frame(EOF, "api", 7)).unwrap();
        drop(a);
        let mut r = FrameReader::new(b);
        let (kind, p) = r.next().unwrap().unwrap();
        match decode_tap(kind, p).unwrap() {
            TapMsg::Lines {
                unit,
                generation,
                stream,
                time,
                lines: got,
            } => {
                assert_eq!(
                    (unit.as_str(), generation, stream),
                    ("api", 7, Stream::Stderr)
                );
                assert_eq!(time, UNIX_EPOCH + Duration::from_millis(1234));
                assert_eq!(got.iter().collect::<Vec<_>>(), lines);
            }
            other => panic!("{other:?}"),
        }
        let (kind, p) = r.next().unwrap().unwrap();
        assert!(matches!(
            decode_tap(kind, p),
            Some(TapMsg::Eof { generation: 7, .. })
        ));
        assert!(r.next().unwrap().is_none());
    }

    #[test]
    fn an_end_of_output_waits_for_room_where_lines_are_dropped() {
        let (tx, rx) = sync_channel::<Out>(1);
        let tap = Tap::new(tx);
        tap.send(b"first".to_vec());
        tap.send(b"dropped: no room".to_vec());
        assert_eq!(tap.dropped.load(Ordering::Relaxed), 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            // The queue is full until this takes one; then the end gets in.
            std::thread::sleep(Duration::from_millis(20));
            while let Ok(Out::Frame(f)) = rx.recv_timeout(Duration::from_secs(5)) {
                got.push(f);
                if got.len() == 2 {
                    break;
                }
            }
            got
        });
        rt.block_on(tap.send_kept(unit_frame(EOF, "api", 3)));
        let got = reader.join().unwrap();
        assert_eq!(got[0], b"first");
        assert_eq!(got[1], unit_frame(EOF, "api", 3));
    }

    /// Frames of lines wait for the daemon up to `MAX_QUEUED` bytes, whatever their number;
    /// what the writer takes off makes room again.
    #[test]
    fn frames_for_a_slow_daemon_are_bounded_in_bytes() {
        let (tx, rx) = sync_channel::<Out>(16);
        let tap = Tap::new(tx);
        let big = || vec![7u8; MAX_QUEUED / 2 - 10];
        tap.send(big());
        tap.send(big());
        assert_eq!(tap.dropped.load(Ordering::Relaxed), 0);
        tap.send(big());
        assert_eq!(
            tap.dropped.load(Ordering::Relaxed),
            1,
            "over the bytes bound"
        );
        let out = rx.try_recv().unwrap();
        tap.queued.fetch_sub(out.len(), Ordering::Relaxed);
        tap.send(big());
        assert_eq!(tap.dropped.load(Ordering::Relaxed), 1, "room again");
        assert_eq!(
            tap.queued.load(Ordering::Relaxed),
            2 * (MAX_QUEUED / 2 - 10)
        );
    }

    #[test]
    fn garbage_frames_are_errors_not_panics() {
        for bytes in [
            &[0u8, 0, 0, 0, 1][..],
            &[255, 255, 255, 255, 1],
            &[3, 0, 0, 0, 10, 1, 2],
        ] {
            let (a, b) = UnixStream::pair().unwrap();
            (&a).write_all(bytes).unwrap();
            drop(a);
            let mut r = FrameReader::new(b);
            if let Ok(Some((kind, p))) = r.next() {
                let _ = decode_tap(kind, p);
            }
        }
        assert!(decode_tap(LINES, vec![1, 2, 3]).is_none());
        assert!(Attach::decode(&[0; 5]).is_none());
    }

    /// A generation whose lines the daemon does not want costs it only news (its file has
    /// every line); said otherwise later, the lines come again.
    #[test]
    fn unwanted_lines_come_as_news_and_are_all_in_the_file() {
        let state = tempfile::tempdir().unwrap();
        let log_dir = state.path().join("logs");
        std::fs::create_dir(&log_dir).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(socket_path(state.path())).unwrap();
        let keeper = {
            let log_dir = log_dir.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(keep(listener, log_dir))
            })
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let link = KeeperLink::connect(
            state.path(),
            || Ok(()),
            move |m| {
                let _ = tx.send(m);
            },
        )
        .unwrap();
        let settings = LogSettings {
            ring_lines: 0,
            max_file_bytes: 1 << 20,
            keep_files: 1,
        };
        let mut writers = Vec::new();
        for (unit, lines) in [("quiet", false), ("loud", true)] {
            let (out_r, out_w) = nix::unistd::pipe().unwrap();
            let (err_r, err_w) = nix::unistd::pipe().unwrap();
            let attach = Attach {
                unit: unit.into(),
                generation: 1,
                settings,
                path: log_dir.join(format!("{unit}.log")),
            };
            link.attach(&attach, &out_r, &err_r, lines).unwrap();
            writers.push((std::fs::File::from(out_w), err_w));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let next = || {
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .expect("the keeper went quiet")
        };
        // Each line is written once its unit's last frame has come: one frame per line.
        let mut seen: Vec<(String, &str)> = Vec::new();
        for (i, (out, _)) in writers.iter_mut().enumerate() {
            writeln!(out, "first of {i}").unwrap();
            let frame = next();
            seen.push(match frame {
                TapMsg::Lines { unit, lines, .. } => {
                    assert_eq!(
                        lines.iter().collect::<Vec<_>>(),
                        [format!("first of {i}").as_bytes()]
                    );
                    (unit, "lines")
                }
                TapMsg::News { unit, generation } => {
                    assert_eq!(generation, 1);
                    (unit, "news")
                }
                other => panic!("unexpected {other:?}"),
            });
        }
        assert_eq!(
            seen,
            [("quiet".to_string(), "news"), ("loud".to_string(), "lines")]
        );
        // Wanted after all: lines again, once the keeper has heard (until then, news).
        link.want("quiet", 1, true).unwrap();
        let quiet = &mut writers[0].0;
        let mut n = 0;
        loop {
            n += 1;
            writeln!(quiet, "more {n}").unwrap();
            match next() {
                TapMsg::Lines { unit, lines, .. } => {
                    assert_eq!(unit, "quiet");
                    assert_eq!(
                        lines.iter().collect::<Vec<_>>(),
                        [format!("more {n}").as_bytes()]
                    );
                    break;
                }
                TapMsg::News { .. } => assert!(n < 1000, "the keeper never heard"),
                other => panic!("unexpected {other:?}"),
            }
        }
        // The ends come through whatever was wanted; the quiet unit's file has every line.
        drop(writers);
        let mut ends = 0;
        while ends < 2 {
            if let TapMsg::Eof { .. } = next() {
                ends += 1;
            }
        }
        let text = std::fs::read_to_string(log_dir.join("quiet.log")).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .map(|l| l.splitn(3, ' ').nth(2).unwrap())
            .collect();
        let expected: Vec<String> = std::iter::once("first of 0".to_string())
            .chain((1..=n).map(|i| format!("more {i}")))
            .collect();
        assert_eq!(kept, expected);
        // Nothing left to keep and no daemon: the keeper ends by itself.
        drop(link);
        while !keeper.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the keeper did not end"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        keeper.join().unwrap().unwrap();
    }
}
