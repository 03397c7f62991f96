//! ChaCha20 (RFC 8439 §2.3) sixteen blocks at a time, one block per 32-bit lane of the
//! AVX-512 registers. All lanes share the key; each lane has its own block counter and nonce,
//! so the sixteen blocks may belong to different messages. That is what lets a batch of
//! 1420-byte packets (23 blocks each) fill every lane, where a one-message implementation
//! leaves a third of its last 16-block round empty.

use core::arch::x86_64::*;

use crate::simd::store;

/// What differs between lanes, one 32-bit lane per block: the block counter (state word 12)
/// and the nonce (words 13-15). Kept in registers: the dealer fills lanes with blends, which
/// cost less than masked stores into memory.
#[derive(Clone, Copy)]
pub struct LaneInputs {
    pub counter: __m512i,
    pub nonce: [__m512i; 3],
}

impl LaneInputs {
    /// All lanes: counter 0, nonce 0.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn zero() -> LaneInputs {
        LaneInputs {
            counter: _mm512_setzero_si512(),
            nonce: [_mm512_setzero_si512(); 3],
        }
    }
}

macro_rules! quarter_round {
    ($x:ident, $a:literal, $b:literal, $c:literal, $d:literal) => {
        $x[$a] = _mm512_add_epi32($x[$a], $x[$b]);
        $x[$d] = _mm512_rol_epi32::<16>(_mm512_xor_si512($x[$d], $x[$a]));
        $x[$c] = _mm512_add_epi32($x[$c], $x[$d]);
        $x[$b] = _mm512_rol_epi32::<12>(_mm512_xor_si512($x[$b], $x[$c]));
        $x[$a] = _mm512_add_epi32($x[$a], $x[$b]);
        $x[$d] = _mm512_rol_epi32::<8>(_mm512_xor_si512($x[$d], $x[$a]));
        $x[$c] = _mm512_add_epi32($x[$c], $x[$d]);
        $x[$b] = _mm512_rol_epi32::<7>(_mm512_xor_si512($x[$b], $x[$c]));
    };
}

/// Writes the keystream block of every lane: `out[l]` is lane `l`'s 64 bytes.
#[target_feature(enable = "avx512f")]
pub fn keystream16(key: &[u32; 8], lanes: LaneInputs, out: &mut [[u8; 64]; 16]) {
    let init = [
        _mm512_set1_epi32(0x6170_7865),
        _mm512_set1_epi32(0x3320_646e),
        _mm512_set1_epi32(0x7962_2d32),
        _mm512_set1_epi32(0x6b20_6574),
        _mm512_set1_epi32(key[0] as i32),
        _mm512_set1_epi32(key[1] as i32),
        _mm512_set1_epi32(key[2] as i32),
        _mm512_set1_epi32(key[3] as i32),
        _mm512_set1_epi32(key[4] as i32),
        _mm512_set1_epi32(key[5] as i32),
        _mm512_set1_epi32(key[6] as i32),
        _mm512_set1_epi32(key[7] as i32),
        lanes.counter,
        lanes.nonce[0],
        lanes.nonce[1],
        lanes.nonce[2],
    ];
    let mut x = init;
    for _ in 0..10 {
        quarter_round!(x, 0, 4, 8, 12);
        quarter_round!(x, 1, 5, 9, 13);
        quarter_round!(x, 2, 6, 10, 14);
        quarter_round!(x, 3, 7, 11, 15);
        quarter_round!(x, 0, 5, 10, 15);
        quarter_round!(x, 1, 6, 11, 12);
        quarter_round!(x, 2, 7, 8, 13);
        quarter_round!(x, 3, 4, 9, 14);
    }
    for (w, i) in x.iter_mut().zip(init) {
        *w = _mm512_add_epi32(*w, i);
    }
    // x[w] holds word w of all sixteen blocks; the output wants each block's sixteen words
    // together. First a 4x4 transpose inside every 128-bit quarter, per group of four words:
    // y[g][j], quarter q = words 4g..4g+3 of block 4q+j.
    let mut y = [[_mm512_setzero_si512(); 4]; 4];
    for (g, yg) in y.iter_mut().enumerate() {
        *yg = transpose4(x[4 * g], x[4 * g + 1], x[4 * g + 2], x[4 * g + 3]);
    }
    // Then a 4x4 transpose of the 128-bit quarters themselves: block 4q+j gathers quarter q
    // of y[0][j], y[1][j], y[2][j], y[3][j].
    for j in 0..4 {
        let p0 = _mm512_shuffle_i32x4::<0x44>(y[0][j], y[1][j]);
        let p1 = _mm512_shuffle_i32x4::<0xEE>(y[0][j], y[1][j]);
        let p2 = _mm512_shuffle_i32x4::<0x44>(y[2][j], y[3][j]);
        let p3 = _mm512_shuffle_i32x4::<0xEE>(y[2][j], y[3][j]);
        store(_mm512_shuffle_i32x4::<0x88>(p0, p2), &mut out[j]);
        store(_mm512_shuffle_i32x4::<0xDD>(p0, p2), &mut out[4 + j]);
        store(_mm512_shuffle_i32x4::<0x88>(p1, p3), &mut out[8 + j]);
        store(_mm512_shuffle_i32x4::<0xDD>(p1, p3), &mut out[12 + j]);
    }
}

/// In every 128-bit quarter q: a, b, c, d hold one word of blocks 4q..4q+3; the result j
/// holds the four words (a, b, c, d) of block 4q+j.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose4(a: __m512i, b: __m512i, c: __m512i, d: __m512i) -> [__m512i; 4] {
    let ab_lo = _mm512_unpacklo_epi32(a, b);
    let ab_hi = _mm512_unpackhi_epi32(a, b);
    let cd_lo = _mm512_unpacklo_epi32(c, d);
    let cd_hi = _mm512_unpackhi_epi32(c, d);
    [
        _mm512_unpacklo_epi64(ab_lo, cd_lo),
        _mm512_unpackhi_epi64(ab_lo, cd_lo),
        _mm512_unpacklo_epi64(ab_hi, cd_hi),
        _mm512_unpackhi_epi64(ab_hi, cd_hi),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::load_u32;

    #[test]
    fn rfc8439_block_function_in_every_lane() {
        if !crate::cpu_has_lanes() {
            eprintln!("no AVX-512 F/IFMA here: nothing to test");
            return;
        }
        // RFC 8439 §2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, counter 1.
        let key: [u32; 8] = core::array::from_fn(|i| {
            u32::from_le_bytes(core::array::from_fn(|b| (4 * i + b) as u8))
        });
        let expected_words: [u32; 16] = [
            0xe4e7f110, 0x15593bd1, 0x1fdd0f50, 0xc47120a3, 0xc7f4d1c7, 0x0368c033, 0x9aaa2204,
            0x4e6cd4c3, 0x466482d2, 0x09aa9f07, 0x05d7c214, 0xa2028bd9, 0xd19c12b5, 0xb94e16de,
            0xe883d0cb, 0x4e3c50a2,
        ];
        // Lane 5 carries the RFC block; the others other counters, to see they do not bleed.
        let mut counter = [0u32; 16];
        for (l, c) in counter.iter_mut().enumerate() {
            *c = if l == 5 { 1 } else { 100 + l as u32 };
        }
        let nonce = [[0x0900_0000u32; 16], [0x4a00_0000; 16], [0; 16]];
        // SAFETY: the CPU has AVX-512F (checked above).
        let mut lanes = unsafe {
            LaneInputs {
                counter: load_u32(&counter),
                nonce: nonce.map(|w| load_u32(&w)),
            }
        };
        let mut out = [[0u8; 64]; 16];
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { keystream16(&key, lanes, &mut out) };
        let got: [u32; 16] = core::array::from_fn(|w| {
            u32::from_le_bytes(out[5][4 * w..4 * w + 4].try_into().unwrap())
        });
        assert_eq!(got, expected_words);
        // Lane 7 (counter 107) is the same computation as lane 5 with another counter.
        counter[5] = 107;
        // SAFETY: as above.
        lanes.counter = unsafe { load_u32(&counter) };
        let mut again = [[0u8; 64]; 16];
        // SAFETY: as above.
        unsafe { keystream16(&key, lanes, &mut again) };
        assert_eq!(again[5], out[7]);
        assert_ne!(out[7], out[5]);
    }
}
