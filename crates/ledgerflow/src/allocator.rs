//! The process's allocator: mimalloc (v2, without transparent huge pages), giving freed memory
//! back to the system as soon as it is free.

use libmimalloc_sys::{mi_option_set, mi_option_t};

/// mimalloc returns freed memory to the system; glibc's allocator kept the gateway's argon2
/// buffers, so its RSS only grew with each burst of sign-ups.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2's `mimalloc.h`, which the sys crate names no
/// constant for.
const PURGE_DELAY: mi_option_t = 15;

/// Has mimalloc purge freed pages at once rather than 10 ms later (100 ms for its arenas),
/// unless `MIMALLOC_PURGE_DELAY` is set.
///
/// Under load a worker frees and takes pages faster than that delay, so with it the freed
/// ones pile up: the busier worker's peak RSS in a bench load varied from 56 MB to 67 MB
/// across runs, over the 64 MB budget in some; purged at once it stays at about 55 MB. The
/// price is page faults for pages given back and taken again, a few per cent of the
/// machine's CPU (docs/benchmarks.md); `MIMALLOC_PURGE_DELAY=10` buys that back.
#[allow(unsafe_code)]
pub(crate) fn purge_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` stores one integer in mimalloc's option table, which any
        // thread may do at any time; purges read it afresh each time.
        unsafe { mi_option_set(PURGE_DELAY, 0) };
    }
}

#[cfg(test)]
mod tests {
    use libmimalloc_sys::mi_option_get;

    use super::PURGE_DELAY;

    /// Ties the number to the option: 10 (ms) is the purge delay's default, and neither of
    /// its neighbours' (1 and 0), which a renumbering would put at this index.
    #[test]
    #[allow(unsafe_code)]
    fn the_option_set_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one integer of mimalloc's option table.
        assert_eq!(unsafe { mi_option_get(PURGE_DELAY) }, 10);
    }
}
