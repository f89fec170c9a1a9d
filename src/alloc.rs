//! The process's allocator: mimalloc, entered through its plain `mi_malloc` family whenever the
//! layout allows, as the `mimalloc` crate itself did before it took the aligned entry points for
//! every call (about twice the instructions per allocation with mimalloc 3, a few percent of
//! the service's CPU per invocation; `benches/instructions.sh` measures it).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignment every mimalloc block has by construction: block sizes are whole words and pages
/// start aligned. (mimalloc documents 16, `MI_MAX_ALIGN_SIZE`, and the test below sees it; the
/// word is what holds whatever the size class, and nearly every Rust allocation asks for at
/// most 8.)
const MIN_ALIGN: usize = 8;

/// The global allocator of the `workspace` binary and its benchmarks.
pub struct Allocator;

fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every method forwards to mimalloc, which returns blocks of at least the requested size,
// aligned as the layout asks: through the aligned entry points unless `plain` holds, in which
// case mimalloc's own guarantee covers the alignment.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above; `layout.size()` is non-zero (GlobalAlloc's contract).
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; `new_size` is non-zero.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_have_the_alignment_their_layout_asks_for() {
        let a = Allocator;
        for size in [
            1usize,
            2,
            3,
            7,
            8,
            9,
            15,
            16,
            17,
            24,
            31,
            33,
            100,
            4096,
            1 << 20,
        ] {
            for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                let mut held = Vec::new();
                for _ in 0..64 {
                    // SAFETY: a non-zero-sized layout; the block is written within its size and
                    // freed with the same layout.
                    unsafe {
                        let p = a.alloc(layout);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        p.write_bytes(0xa5, size);
                        held.push(p);
                    }
                }
                for p in held {
                    // SAFETY: allocated above with `layout`; grown and shrunk blocks keep the
                    // alignment and the bytes that fit.
                    unsafe {
                        let q = a.realloc(p, layout, size * 3);
                        assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                        assert_eq!(*q, 0xa5);
                        a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    }
                }
                // SAFETY: as above.
                unsafe {
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
