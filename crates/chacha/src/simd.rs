//! The only `unsafe` of this crate: unaligned 512-bit loads and stores between byte arrays
//! and registers. Everything else is safe Rust calling safe intrinsics inside
//! `#[target_feature]` functions.

use core::arch::x86_64::{__m512i, _mm512_loadu_si512, _mm512_storeu_si512};

#[inline]
#[target_feature(enable = "avx512f")]
pub fn load(bytes: &[u8; 64]) -> __m512i {
    // SAFETY: `bytes` is a reference to 64 readable bytes, and the load has no alignment
    // requirement.
    unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
pub fn store(v: __m512i, bytes: &mut [u8; 64]) {
    // SAFETY: `bytes` is a unique reference to 64 writable bytes, and the store has no
    // alignment requirement.
    unsafe { _mm512_storeu_si512(bytes.as_mut_ptr().cast(), v) }
}

#[cfg(test)]
#[inline]
#[target_feature(enable = "avx512f")]
pub fn load_u32(words: &[u32; 16]) -> __m512i {
    // SAFETY: `words` is a reference to 64 readable bytes; no alignment requirement.
    unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
pub fn store_u64(v: __m512i, words: &mut [u64; 8]) {
    // SAFETY: `words` is a unique reference to 64 writable bytes; no alignment requirement.
    unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), v) }
}
