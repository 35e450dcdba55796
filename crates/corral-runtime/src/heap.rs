//! How corral's processes use glibc's heap. A daemon for thousands of units lives long and
//! allocates in bursts (reading the project, starting it, answering a `ps` of every unit); by
//! default glibc keeps what a burst freed, in pieces between live allocations, and the resident
//! size only grows. Measured with `scripts/bench --scale` at 5,000 services: daemon RSS
//! 43.8 MiB by default, 32.0 MiB with the settings below. What a burst frees below live
//! allocations stays resident even so: [`settle`] gives those pages back when a burst ends (at
//! 5,000 services, RssAnon after the start 13.9 -> 13.0 MB, after `ps` 14.4 -> 13.5 MB; a
//! trim takes 1-2 ms there, at most one a second).

/// Set once at the start of every corral process, before its threads:
/// - a fixed mmap threshold (256 KiB): a large buffer (a 1 MB answer to `ps`) is mapped and
///   unmapped, never left in the heap. glibc raises the threshold by itself after such a buffer
///   is freed, so the next ones landed in the heap and stayed.
/// - one arena: glibc gives a thread that meets contention an arena of its own, each keeping
///   its own free space; corral's threads mostly wait, and one lock costs less than the copies.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 256 * 1024);
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
}

/// When the heap was last looked at, and whether a look is due (the heap is the process's, so
/// this is too: whoever ends a burst of work calls [`settle`]).
static LOOKED: std::sync::Mutex<(Option<std::time::Instant>, bool)> =
    std::sync::Mutex::new((None, false));

/// At most one look a second: a look walks the allocator's free lists (up to ~0.3 ms at 5,000
/// units), a trim the heap's free pages.
const GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// Free space in the heap worth a trim.
const TRIM_AT: usize = 512 << 10;

/// A burst of work is over (the daemon's queue is empty, an API answer is made): give the
/// free pages inside the heap back to the system if it holds much free space. glibc returns
/// only the top of the heap by itself; what a burst (reading a project of thousands of units,
/// starting or stopping them, sampling their CPU) freed below allocations that live on stays
/// resident. Within a second of the last look, a look is due a second after it instead (one
/// timer, and none once the daemon is idle).
pub fn settle() {
    let mut looked = LOOKED.lock().unwrap_or_else(|e| e.into_inner());
    if looked.0.is_some_and(|at| at.elapsed() < GAP) {
        if !looked.1 && tokio::runtime::Handle::try_current().is_ok() {
            looked.1 = true;
            tokio::spawn(async {
                tokio::time::sleep(GAP).await;
                LOOKED.lock().unwrap_or_else(|e| e.into_inner()).1 = false;
                settle();
            });
        }
        return;
    }
    looked.0 = Some(std::time::Instant::now());
    drop(looked);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 reads the allocator's statistics under its lock.
        let info = unsafe { nix::libc::mallinfo2() };
        // Free space below the top (the top is trimmed by glibc itself).
        let free = info.fordblks.saturating_sub(info.keepcost);
        if free >= TRIM_AT {
            // SAFETY: malloc_trim only releases free memory, under the allocator's lock.
            unsafe { nix::libc::malloc_trim(0) };
        }
    }
}
