//! How corral's processes use glibc's heap. A daemon for thousands of units lives long and
//! allocates in bursts (reading the project, starting it, answering a `ps` of every unit); by
//! default glibc keeps what a burst freed, in pieces between live allocations, and the resident
//! size only grows. Measured with `scripts/bench --scale` at 5,000 services: daemon RSS
//! 43.8 MiB by default, 32.0 MiB with the settings below. (A `malloc_trim` after each burst,
//! tried as well, gave nothing more measurable.)

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
