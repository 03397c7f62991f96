//! Poly1305 (RFC 8439 §2.5) of eight messages at once, one message per 64-bit lane, with the
//! AVX-512 IFMA 52-bit multiply-adds. The accumulator is kept in radix 2^44 (limbs of 44, 44
//! and 42 bits), so a limb product fits the 104 bits IFMA returns as two 52-bit halves.
//!
//! The input is what the ChaCha20-Poly1305 AEAD MACs when the associated data is empty, as in
//! WireGuard's transport messages: the ciphertext, zero-padded to 16 bytes, then a block of
//! the two lengths (0 and the ciphertext's). Every block of that is full, so every block
//! gets the 2^128 bit.

use core::arch::x86_64::*;

use crate::simd::{load, store_u64};

const M44: u64 = (1 << 44) - 1;
const M42: u64 = (1 << 42) - 1;

/// The accumulator and the key of eight lanes.
struct Lanes {
    h: [__m512i; 3],
    /// r, and its powers up to r⁴ for absorbing four blocks with one reduction.
    r: Key,
    r2: Key,
    r3: Key,
    r4: Key,
}

/// A multiplier in radix 2^44, with 20·limb1 and 20·limb2: a limb product of weight 2^132
/// is 20 times itself at weight 2^0.
#[derive(Clone, Copy)]
struct Key {
    limbs: [__m512i; 3],
    s1: __m512i,
    s2: __m512i,
}

impl Key {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn new(limbs: [__m512i; 3]) -> Key {
        Key {
            limbs,
            s1: times20(limbs[1]),
            s2: times20(limbs[2]),
        }
    }
}

/// `tags[l]` = Poly1305 of lane `l`'s AEAD input under one-time key `keys[l]`.
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn tags8(keys: &[[u8; 32]; 8], msgs: &[&[u8]; 8], tags: &mut [[u8; 16]; 8]) {
    let mut r_limbs = [[0u64; 8]; 3];
    for (l, key) in keys.iter().enumerate() {
        let lo = u64::from_le_bytes(key[0..8].try_into().unwrap()) & 0x0fff_fffc_0fff_ffff;
        let hi = u64::from_le_bytes(key[8..16].try_into().unwrap()) & 0x0fff_fffc_0fff_fffc;
        r_limbs[0][l] = lo & M44;
        r_limbs[1][l] = ((lo >> 44) | (hi << 20)) & M44;
        r_limbs[2][l] = hi >> 24;
    }
    let r = Key::new([vector(r_limbs[0]), vector(r_limbs[1]), vector(r_limbs[2])]);
    r_limbs.iter_mut().for_each(|limb| *limb = [0; 8]);
    core::hint::black_box(&mut r_limbs);
    let r2 = Key::new(reduce(products(zeros(), r.limbs, &r)));
    let r3 = Key::new(reduce(products(zeros(), r2.limbs, &r)));
    let r4 = Key::new(reduce(products(zeros(), r2.limbs, &r2)));
    let mut st = Lanes {
        h: [_mm512_setzero_si512(); 3],
        r,
        r2,
        r3,
        r4,
    };

    // Ciphertext blocks every lane has: four blocks a step, transposed in registers.
    let full = msgs.iter().map(|m| m.len() / 16).min().unwrap_or(0);
    let mut j = 0;
    while j + 4 <= full {
        let rows: [__m512i; 8] =
            core::array::from_fn(|l| load(msgs[l][16 * j..16 * j + 64].try_into().unwrap()));
        // w[2k] / w[2k+1]: the low / high 64 bits of block j+k of every lane.
        st.four_blocks(transpose8(rows));
        j += 4;
    }
    // The rest lane by lane: whole blocks, the zero-padded partial one, the length block.
    let blocks: [usize; 8] = core::array::from_fn(|l| msgs[l].len().div_ceil(16) + 1);
    let rounds = blocks.iter().copied().max().unwrap_or(0);
    while j < rounds {
        let mut lo = [0u64; 8];
        let mut hi = [0u64; 8];
        let mut active = 0u8;
        for (l, msg) in msgs.iter().enumerate() {
            let mut block = [0u8; 16];
            if j + 1 < blocks[l] {
                let rest = &msg[16 * j..];
                let n = rest.len().min(16);
                block[..n].copy_from_slice(&rest[..n]);
            } else if j + 1 == blocks[l] {
                block[8..].copy_from_slice(&(msg.len() as u64).to_le_bytes());
            } else {
                continue;
            }
            lo[l] = u64::from_le_bytes(block[..8].try_into().unwrap());
            hi[l] = u64::from_le_bytes(block[8..].try_into().unwrap());
            active |= 1 << l;
        }
        st.block(vector(lo), vector(hi), active);
        j += 1;
    }

    let mut h = [[0u64; 8]; 3];
    for (limb, v) in h.iter_mut().zip(st.h) {
        store_u64(v, limb);
    }
    for l in 0..8 {
        let s = u128::from_le_bytes(keys[l][16..32].try_into().unwrap());
        tags[l] = finish([h[0][l], h[1][l], h[2][l]], s).to_le_bytes();
    }
}

impl Lanes {
    /// Absorbs one 16-byte block (`lo`, `hi`, plus the 2^128 bit) in the lanes of `active`:
    /// h = (h + m)·r.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn block(&mut self, lo: __m512i, hi: __m512i, active: u8) {
        let m = limbs(lo, hi);
        let sum = core::array::from_fn(|i| _mm512_add_epi64(self.h[i], m[i]));
        let d = reduce(products(zeros(), sum, &self.r));
        for (h, d) in self.h.iter_mut().zip(d) {
            *h = _mm512_mask_mov_epi64(*h, active, d);
        }
    }

    /// Absorbs four consecutive blocks in every lane with one reduction:
    /// h = (h + m0)·r⁴ + m1·r³ + m2·r² + m3·r, which is ((((h + m0)·r + m1)·r + m2)·r + m3)·r.
    /// `w[2k]` / `w[2k + 1]` are the low / high halves of block k. The products of m1..m3
    /// do not depend on h, so they run ahead while the previous step's reduction finishes;
    /// the one that does comes last.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn four_blocks(&mut self, w: [__m512i; 8]) {
        let m0 = limbs(w[0], w[1]);
        let mut acc = products(zeros(), limbs(w[6], w[7]), &self.r);
        acc = products(acc, limbs(w[4], w[5]), &self.r2);
        acc = products(acc, limbs(w[2], w[3]), &self.r3);
        let sum = core::array::from_fn(|i| _mm512_add_epi64(self.h[i], m0[i]));
        self.h = reduce(products(acc, sum, &self.r4));
    }
}

/// A block's limbs, with the 2^128 bit.
#[inline]
#[target_feature(enable = "avx512f")]
fn limbs(lo: __m512i, hi: __m512i) -> [__m512i; 3] {
    let m44 = _mm512_set1_epi64(M44 as i64);
    [
        _mm512_and_si512(lo, m44),
        _mm512_and_si512(
            _mm512_or_si512(_mm512_srli_epi64::<44>(lo), _mm512_slli_epi64::<20>(hi)),
            m44,
        ),
        _mm512_or_si512(_mm512_srli_epi64::<24>(hi), _mm512_set1_epi64(1 << 40)),
    ]
}

/// `acc` plus the limb products of a·k, by weight, split into 52-bit halves: [lo0, hi0, lo1,
/// hi1, lo2, hi2]. Weight 2^0: a0k0 + 20(a1k2 + a2k1); weight 2^44: a0k1 + a1k0 + 20 a2k2;
/// weight 2^88: a0k2 + a1k1 + a2k0. The multiply-adds accumulate in place of separate
/// additions (a third fewer instructions than summing zero-based products). `a`'s limbs must
/// be below 2^52; every limb product is below 2^94 (limbs of at most 45 bits times 20·2^44),
/// so its halves are below 2^52 and 2^42, and up to sixteen sets of them fit in 64 bits.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn products(acc: [__m512i; 6], a: [__m512i; 3], k: &Key) -> [__m512i; 6] {
    let [a0, a1, a2] = a;
    let [k0, k1, k2] = k.limbs;
    let (s1, s2) = (k.s1, k.s2);
    let lo = |acc, x, y| _mm512_madd52lo_epu64(acc, x, y);
    let hi = |acc, x, y| _mm512_madd52hi_epu64(acc, x, y);
    [
        lo(lo(lo(acc[0], a0, k0), a1, s2), a2, s1),
        hi(hi(hi(acc[1], a0, k0), a1, s2), a2, s1),
        lo(lo(lo(acc[2], a0, k1), a1, k0), a2, s2),
        hi(hi(hi(acc[3], a0, k1), a1, k0), a2, s2),
        lo(lo(lo(acc[4], a0, k2), a1, k1), a2, k0),
        hi(hi(hi(acc[5], a0, k2), a1, k1), a2, k0),
    ]
}

/// Six zero accumulators for [`products`].
#[inline]
#[target_feature(enable = "avx512f")]
fn zeros() -> [__m512i; 6] {
    [_mm512_setzero_si512(); 6]
}

/// Products (up to sixteen accumulated sets; `four_blocks` adds four) back to limbs of
/// 44/44/42 bits (the middle one may keep a carry bit), modulo 2^130 - 5.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce(p: [__m512i; 6]) -> [__m512i; 3] {
    let m44 = _mm512_set1_epi64(M44 as i64);
    let m42 = _mm512_set1_epi64(M42 as i64);
    let [lo0, hi0, lo1, hi1, lo2, hi2] = p;
    // A high half weighs 2^52 = 2^8 · 2^44 more than its low half: it joins the next limb
    // shifted by 8. The top limb's high half weighs 2^140 ≡ 5120 (mod 2^130 - 5).
    let mut d0 = _mm512_add_epi64(
        lo0,
        _mm512_add_epi64(_mm512_slli_epi64::<12>(hi2), _mm512_slli_epi64::<10>(hi2)),
    );
    let mut d1 = _mm512_add_epi64(lo1, _mm512_slli_epi64::<8>(hi0));
    let mut d2 = _mm512_add_epi64(lo2, _mm512_slli_epi64::<8>(hi1));
    d1 = _mm512_add_epi64(d1, _mm512_srli_epi64::<44>(d0));
    d0 = _mm512_and_si512(d0, m44);
    d2 = _mm512_add_epi64(d2, _mm512_srli_epi64::<44>(d1));
    d1 = _mm512_and_si512(d1, m44);
    let c = _mm512_srli_epi64::<42>(d2);
    d2 = _mm512_and_si512(d2, m42);
    d0 = _mm512_add_epi64(d0, _mm512_add_epi64(c, _mm512_slli_epi64::<2>(c)));
    d1 = _mm512_add_epi64(d1, _mm512_srli_epi64::<44>(d0));
    d0 = _mm512_and_si512(d0, m44);
    [d0, d1, d2]
}

/// 20·x (16x + 4x) for x < 2^45, without AVX-512DQ's 64-bit multiply.
#[inline]
#[target_feature(enable = "avx512f")]
fn times20(x: __m512i) -> __m512i {
    _mm512_add_epi64(_mm512_slli_epi64::<4>(x), _mm512_slli_epi64::<2>(x))
}

#[inline]
#[target_feature(enable = "avx512f")]
fn vector(v: [u64; 8]) -> __m512i {
    _mm512_set_epi64(
        v[7] as i64,
        v[6] as i64,
        v[5] as i64,
        v[4] as i64,
        v[3] as i64,
        v[2] as i64,
        v[1] as i64,
        v[0] as i64,
    )
}

/// Rows: lane l's 64 bytes (eight u64 words). Result k: word k of every lane.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose8(rows: [__m512i; 8]) -> [__m512i; 8] {
    // Pairs of lanes: even words (lo) and odd words (hi) interleaved per 128-bit quarter.
    let u_lo: [__m512i; 4] =
        core::array::from_fn(|p| _mm512_unpacklo_epi64(rows[2 * p], rows[2 * p + 1]));
    let u_hi: [__m512i; 4] =
        core::array::from_fn(|p| _mm512_unpackhi_epi64(rows[2 * p], rows[2 * p + 1]));
    // u_lo[p] quarters hold words 0, 2, 4, 6 of lanes 2p, 2p+1; u_hi[p] words 1, 3, 5, 7.
    let mut out = [_mm512_setzero_si512(); 8];
    for (u, base) in [(u_lo, 0), (u_hi, 1)] {
        // Quarters 0 and 2 (words base, base+4), then 1 and 3 (base+2, base+6).
        let v01 = _mm512_shuffle_i64x2::<0x88>(u[0], u[1]);
        let w01 = _mm512_shuffle_i64x2::<0xDD>(u[0], u[1]);
        let v23 = _mm512_shuffle_i64x2::<0x88>(u[2], u[3]);
        let w23 = _mm512_shuffle_i64x2::<0xDD>(u[2], u[3]);
        out[base] = _mm512_shuffle_i64x2::<0x88>(v01, v23);
        out[base + 4] = _mm512_shuffle_i64x2::<0xDD>(v01, v23);
        out[base + 2] = _mm512_shuffle_i64x2::<0x88>(w01, w23);
        out[base + 6] = _mm512_shuffle_i64x2::<0xDD>(w01, w23);
    }
    out
}

/// The final reduction modulo 2^130 - 5 and the addition of `s`, for one lane.
fn finish(h: [u64; 3], s: u128) -> u128 {
    let [mut h0, mut h1, mut h2] = h;
    let mut c = h1 >> 44;
    h1 &= M44;
    h2 += c;
    c = h2 >> 42;
    h2 &= M42;
    h0 += c * 5;
    c = h0 >> 44;
    h0 &= M44;
    h1 += c;
    c = h1 >> 44;
    h1 &= M44;
    h2 += c;
    // g = h + 5 - 2^130; if that is not negative, h was at least p and g is h mod p.
    let mut g0 = h0 + 5;
    c = g0 >> 44;
    g0 &= M44;
    let mut g1 = h1 + c;
    c = g1 >> 44;
    g1 &= M44;
    let g2 = (h2 + c).wrapping_sub(1 << 42);
    // All ones when g2 did not go below zero; chosen without a branch on secret data.
    let take_g = (g2 >> 63).wrapping_sub(1);
    h0 = (h0 & !take_g) | (g0 & take_g);
    h1 = (h1 & !take_g) | (g1 & take_g);
    h2 = (h2 & !take_g) | (g2 & take_g);
    let acc = (h0 as u128) | ((h1 as u128) << 44) | ((h2 as u128) << 88);
    acc.wrapping_add(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2^130 - 5 in limbs.
    const P: [u64; 3] = [M44 - 4, M44, M42];

    /// Poly1305 of the AEAD input (`msg` zero-padded to 16 bytes, then the block of lengths 0
    /// and `msg.len()`) the slow way: 130-bit numbers in u128 halves, h = (h + m)·r mod p
    /// by schoolbook multiplication of 64-bit words.
    fn reference(key: &[u8; 32], msg: &[u8]) -> [u8; 16] {
        let r = u128::from_le_bytes(key[..16].try_into().unwrap())
            & 0x0fff_fffc_0fff_fffc_0fff_fffc_0fff_ffff;
        let s = u128::from_le_bytes(key[16..].try_into().unwrap());
        let mut input = msg.to_vec();
        input.resize(msg.len().div_ceil(16) * 16, 0);
        input.extend_from_slice(&0u64.to_le_bytes());
        input.extend_from_slice(&(msg.len() as u64).to_le_bytes());
        // h as three 64-bit words (h < 2^131 between steps), reduced mod p = 2^130 - 5.
        let mut h = [0u64; 3];
        for block in input.chunks(16) {
            let m = u128::from_le_bytes(block.try_into().unwrap());
            let (lo, carry) = (h[0] as u128 | (h[1] as u128) << 64).overflowing_add(m);
            let top = h[2] as u128 + 1 + carry as u128;
            // (lo + top·2^128)·r with r < 2^124, as words.
            let mut prod = [0u128; 5];
            let hw = [lo as u64, (lo >> 64) as u64, top as u64];
            let rw = [r as u64, (r >> 64) as u64];
            for (i, &x) in hw.iter().enumerate() {
                for (j, &y) in rw.iter().enumerate() {
                    let p = x as u128 * y as u128;
                    prod[i + j] += p & u64::MAX as u128;
                    prod[i + j + 1] += p >> 64;
                }
            }
            for i in 0..4 {
                prod[i + 1] += prod[i] >> 64;
                prod[i] &= u64::MAX as u128;
            }
            // Split at 2^130: low 130 bits plus 5 times the rest.
            let low = [prod[0] as u64, prod[1] as u64, (prod[2] as u64) & 3];
            let high = (prod[2] >> 2) | (prod[3] << 62) | (prod[4] << 126);
            let add = high * 5;
            let (w0, c0) = low[0].overflowing_add(add as u64);
            let (w1, c1) = low[1].overflowing_add((add >> 64) as u64 + c0 as u64);
            h = [w0, w1, low[2] + c1 as u64];
        }
        // Final: h mod p (h < 2p here), plus s mod 2^128.
        let h130 = |h: [u64; 3]| {
            (h[2] as u128) >> 2 != 0 || (h[2] == 3 && h[1] == u64::MAX && h[0] >= u64::MAX - 4)
        };
        while h130(h) {
            // h - p = h + 5 - 2^130.
            let (w0, c0) = h[0].overflowing_add(5);
            let (w1, c1) = h[1].overflowing_add(c0 as u64);
            h = [w0, w1, (h[2] + c1 as u64) - 4];
        }
        (h[0] as u128 | (h[1] as u128) << 64)
            .wrapping_add(s)
            .to_le_bytes()
    }

    #[test]
    fn tags_match_a_reference_at_the_extremes() {
        if !crate::cpu_has_lanes() {
            eprintln!("no AVX-512 F/IFMA here: nothing to test");
            return;
        }
        // The largest r the clamp allows, and all-ones data: every limb and every accumulated
        // product at its bound. Lengths around the four-block steps and their tails; the
        // four-block steps run only over the blocks every lane has, so lanes of one length
        // as well as mixed ones.
        let max_key = [0xffu8; 32];
        let lengths = [0usize, 1, 15, 16, 63, 64, 65, 127, 1420, 1436, 4095];
        let data = |n: usize, seed: usize| -> Vec<u8> {
            (0..n)
                .map(|b| {
                    if seed.is_multiple_of(2) {
                        0xff
                    } else {
                        (b * 7 + seed) as u8
                    }
                })
                .collect()
        };
        let mut batches: Vec<[Vec<u8>; 8]> = Vec::new();
        for &n in &lengths {
            batches.push(core::array::from_fn(|l| data(n, l)));
            batches.push(core::array::from_fn(|l| data(n + 17 * l, l)));
        }
        for w in 0..lengths.len() {
            batches.push(core::array::from_fn(|l| {
                data(lengths[(w + l) % lengths.len()], l)
            }));
        }
        for (i, batch) in batches.iter().enumerate() {
            let keys: [[u8; 32]; 8] = core::array::from_fn(|l| {
                if (l + i) % 3 == 0 {
                    max_key
                } else {
                    core::array::from_fn(|b| (b * 31 + l * 5 + i) as u8)
                }
            });
            let msgs: [&[u8]; 8] = core::array::from_fn(|l| &batch[l][..]);
            let mut tags = [[0u8; 16]; 8];
            // SAFETY: the CPU has AVX-512 F and IFMA (checked above).
            unsafe { tags8(&keys, &msgs, &mut tags) };
            for l in 0..8 {
                assert_eq!(
                    tags[l],
                    reference(&keys[l], msgs[l]),
                    "batch {i}, lane {l}, {} bytes",
                    msgs[l].len()
                );
            }
        }
    }

    #[test]
    fn final_reduction_at_and_around_the_modulus() {
        let s = 0x0123_4567_89ab_cdef_0fed_cba9_8765_4321u128;
        // h = p is 0, p + 3 is 3, p - 1 stays.
        assert_eq!(finish(P, s), s);
        assert_eq!(finish([P[0] + 3, P[1], P[2]], s), s.wrapping_add(3));
        assert_eq!(
            finish([P[0] - 1, P[1], P[2]], 0),
            ((P[0] - 1) as u128) | ((P[1] as u128) << 44) | ((P[2] as u128) << 88)
        );
        // Unreduced limbs: a carry out of the middle limb, and 2^130 itself (≡ 5).
        assert_eq!(finish([0, 1 << 44, 0], 0), 1u128 << 88);
        assert_eq!(finish([0, 0, 1 << 42], 0), 5);
        // Only the low 128 bits of h + s count.
        assert_eq!(finish([0, 0, 1 << 40], 1), 1);
    }
}
