//! JSON as the runtime writes calls and responses: byte for byte what
//! `serde_json` writes, with a faster escape for long strings. Arguments and
//! results are often one large string, and `serde_json` looks at each of its
//! bytes in turn; this looks at sixteen at once ([`find_special`]) and copies
//! the runs that need no escape (measured in `benches/hot_path.rs`). The
//! reader ([`read`]) scans strings with the same function.

use serde_json::Value;

pub(crate) mod read;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Nonzero if any of the eight bytes of `x` must be escaped in a JSON
/// string: a control character (below 0x20), `"` or `\`. The classic tests
/// for a zero byte and for a byte below a limit (at most 0x80), which are
/// exact as to whether there is one.
#[inline]
fn escapes(x: u64) -> u64 {
    let control = x.wrapping_sub(ONES * 0x20) & !x;
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    (control | (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash)) & HIGHS
}

/// The escape of one byte, as `serde_json` writes it, if it needs one.
#[inline]
fn escape(byte: u8) -> Option<&'static [u8]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // `\u00XX` for each control character without a short form.
    static CONTROL: [[u8; 6]; 32] = {
        let mut table = [[0u8; 6]; 32];
        let mut i = 0;
        while i < 32 {
            table[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        table
    };
    Some(match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        0..=0x1f => &CONTROL[usize::from(byte)],
        _ => return None,
    })
}

/// Appends `s` as a JSON string: the runs that need no escape copied
/// whole, in the same pass that looks for their end ([`copy_plain`]).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let special = copy_plain(out, bytes, start);
        let Some(&byte) = bytes.get(special) else { break };
        out.extend_from_slice(escape(byte).expect("a byte that needs an escape"));
        start = special + 1;
    }
    out.push(b'"');
}

/// Appends `bytes` from `from` up to the first byte that needs an escape,
/// and returns that byte's index (or the length, if there is none). With
/// AVX2, each block is stored as it is scanned: one pass over a long
/// string, and no `memcpy` (see [`append`]).
fn copy_plain(out: &mut Vec<u8>, bytes: &[u8], from: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() - from >= 32 && std::arch::is_x86_feature_detected!("avx2") {
        out.reserve(bytes.len() - from);
        let len = out.len();
        // SAFETY: the CPU has AVX2 (just checked), and `out` has room for
        // every byte of `bytes` from `from`: all the stores write, whatever
        // they find. The bytes stored are initialised; those past the
        // special byte are left out of the length, to be written over.
        let left = unsafe {
            match avx2::copy_plain(bytes, from, out.as_mut_ptr().add(len)) {
                Ok(special) => {
                    out.set_len(len + special - from);
                    return special;
                }
                Err(left) => {
                    out.set_len(len + left - from);
                    left
                }
            }
        };
        let special = find_special_swar(bytes, left);
        out.extend_from_slice(&bytes[left..special]);
        return special;
    }
    let special = find_special(bytes, from);
    out.extend_from_slice(&bytes[from..special]);
    special
}

/// Copies of this many bytes and more go through [`copy`]'s vector loop.
const LONG_COPY: usize = 1024;

/// Copies `src` into `dst`, of the same length. Long copies are made with
/// 32-byte vector moves where the CPU has AVX2, not with glibc's `memcpy`:
/// its `rep movsb` is some 30 times slower on AMD Zen CPUs (3 µs instead of
/// 0.1 for 10 KiB) when the destination lies a few bytes past the source,
/// modulo 4096, as a payload copied to just after a JSON prefix or an MQTT
/// header can (measured in `benches/hot_path.rs`).
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    copy_into(dst, src, false);
}

/// Appends `src` to `out`, as [`copy`] copies.
pub(crate) fn append(out: &mut Vec<u8>, src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if src.len() >= LONG_COPY && std::arch::is_x86_feature_detected!("avx2") {
        out.reserve(src.len());
        let len = out.len();
        // SAFETY: the CPU has AVX2, `out` has room for `src` past its
        // length, and every byte of it is written before the length grows.
        unsafe {
            avx2::copy(src, out.as_mut_ptr().add(len));
            out.set_len(len + src.len());
        }
        return;
    }
    out.extend_from_slice(src);
}

/// Copies `src` into `dst`, of the same length, as [`copy`] does, but with
/// stores that bypass the CPU's caches where it can (non-temporal stores,
/// AVX2): for bytes written once and seldom read, such as the responses the
/// dedupe window caches. A plain store to memory not in the cache first
/// reads each line in, and evicts a line the next call may need to make
/// room for it; the window writes 10 KiB of such lines for a 10 KiB result.
pub(crate) fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    copy_into(dst, src, true);
}

/// [`copy`], or [`copy_streaming`] when `streaming`.
fn copy_into(dst: &mut [u8], src: &[u8], streaming: bool) {
    assert_eq!(dst.len(), src.len(), "copy between slices of the same length");
    #[cfg(target_arch = "x86_64")]
    if src.len() >= LONG_COPY && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, and `dst` has room for all of `src`
        // (at least `LONG_COPY` bytes: more than either copy needs).
        unsafe {
            match streaming {
                true => avx2::copy_streaming(src, dst.as_mut_ptr()),
                false => avx2::copy(src, dst.as_mut_ptr()),
            }
        }
        return;
    }
    dst.copy_from_slice(src);
}

/// `s` as a `String` of its own, copied as [`copy`] copies.
pub(crate) fn owned(s: &str) -> String {
    let mut bytes = Vec::with_capacity(s.len());
    append(&mut bytes, s.as_bytes());
    // SAFETY: the bytes of a `str`, copied whole.
    unsafe { String::from_utf8_unchecked(bytes) }
}

/// Appends `s` to `out`, as [`copy`] copies.
pub(crate) fn push_str(out: &mut String, s: &str) {
    // SAFETY: a whole `str` appended to a `String` keeps it UTF-8.
    append(unsafe { out.as_mut_vec() }, s.as_bytes());
}

/// The index of the first byte at or after `from` that a JSON string
/// cannot hold as it is (a control character, `"` or `\`), or the length
/// of `bytes` if there is none. Thirty-two bytes per compare on x86_64 CPUs
/// with AVX2 (checked once, at run time), sixteen on the others (SSE2, which
/// every x86_64 has), eight elsewhere: arguments and results are often one
/// large string, and `serde_json` looks at one or eight bytes at a time.
pub(crate) fn find_special(bytes: &[u8], from: usize) -> usize {
    // Most strings of a call are short (keys, ids, names): too short for a
    // vector, they skip the vector loops' call and setup.
    #[cfg(target_arch = "x86_64")]
    if bytes.len().saturating_sub(from) < 32 {
        return find_special_swar(bytes, from);
    }
    #[cfg(target_arch = "x86_64")]
    let from = {
        let found = if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (just checked).
            unsafe { avx2::find(bytes, from) }
        } else {
            // SAFETY: SSE2 is part of every x86_64 CPU (the target's baseline).
            unsafe { sse2::find(bytes, from) }
        };
        match found {
            Ok(found) => return found,
            Err(left) => left,
        }
    };
    find_special_swar(bytes, from)
}

/// [`find_special`] eight bytes at a time, for what the vector loops leave.
fn find_special_swar(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    while at + 8 <= bytes.len() {
        let flags = escapes(u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes")));
        if flags != 0 {
            // The lowest flagged byte of a word is exact (a false flag can
            // only sit above a true one).
            return at + (flags.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| NEEDS_ESCAPE[usize::from(b)])
        .map_or(bytes.len(), |i| at + i)
}

/// Whether a byte needs an escape in a JSON string, by table: one load a
/// byte where [`escape`]'s match is a chain of compares.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8, _mm256_storeu_si256, _mm256_testz_si256,
    };

    /// The 32 bytes at `at`.
    ///
    /// # Safety
    ///
    /// `at + 32 <= bytes.len()`. Checked by the callers' loop conditions:
    /// a bounds check here, four times a block, cost a third of the scan.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(bytes: &[u8], at: usize) -> __m256i {
        debug_assert!(at + 32 <= bytes.len());
        // SAFETY: the 32 bytes from `at` are in `bytes` (the caller's
        // promise), and an unaligned load requires no alignment.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().add(at).cast::<__m256i>()) }
    }

    /// Stores `x` at `dst + at`.
    ///
    /// # Safety
    ///
    /// `dst + at` is valid for 32 bytes of writes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store(dst: *mut u8, at: usize, x: __m256i) {
        // SAFETY: the caller's promise; an unaligned store requires no alignment.
        unsafe { _mm256_storeu_si256(dst.add(at).cast::<__m256i>(), x) }
    }

    /// 0xff in each byte of the 32 at `at` that needs an escape.
    ///
    /// # Safety
    ///
    /// As for [`load`].
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn marks(bytes: &[u8], at: usize) -> __m256i {
        // SAFETY: the caller's promise.
        marks_of(unsafe { load(bytes, at) })
    }

    /// 0xff in each byte of `x` that needs an escape.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn marks_of(x: __m256i) -> __m256i {
        let quote = _mm256_cmpeq_epi8(x, _mm256_set1_epi8(b'"' as i8));
        let backslash = _mm256_cmpeq_epi8(x, _mm256_set1_epi8(b'\\' as i8));
        // Below 0x20, unsigned: min(x, 0x1f) == x.
        let control = _mm256_cmpeq_epi8(_mm256_min_epu8(x, _mm256_set1_epi8(0x1f)), x);
        _mm256_or_si256(_mm256_or_si256(quote, backslash), control)
    }

    /// Bit `i` is set if byte `i` of the block `marks` came from needs an escape.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn flags(marks: __m256i) -> u64 {
        u64::from(_mm256_movemask_epi8(marks) as u32)
    }

    /// The index of the first byte marked in the four blocks of
    /// `marks`, the first at `at`, if any: one branch when there is none.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn first_mark(at: usize, [a, b, c, d]: [__m256i; 4]) -> Option<usize> {
        let any = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
        if _mm256_testz_si256(any, any) != 0 {
            return None;
        }
        let low = flags(a) | flags(b) << 32;
        if low != 0 {
            return Some(at + low.trailing_zeros() as usize);
        }
        let high = flags(c) | flags(d) << 32;
        Some(at + 64 + high.trailing_zeros() as usize)
    }

    /// `Ok` with the index of the first byte that needs an escape, or
    /// `Err` with where fewer than 32 bytes are left to look at.
    #[target_feature(enable = "avx2")]
    pub(super) fn find(bytes: &[u8], mut at: usize) -> Result<usize, usize> {
        // Long strings are mostly plain: four blocks are tested with one
        // branch, and only a block with a mark is looked into.
        while at + 128 <= bytes.len() {
            // SAFETY: the four blocks end at `at + 128`, within `bytes`.
            let (a, b, c, d) = unsafe {
                (
                    marks(bytes, at),
                    marks(bytes, at + 32),
                    marks(bytes, at + 64),
                    marks(bytes, at + 96),
                )
            };
            if let Some(found) = first_mark(at, [a, b, c, d]) {
                return Ok(found);
            }
            at += 128;
        }
        while at + 32 <= bytes.len() {
            // SAFETY: the block ends at `at + 32`, within `bytes`.
            let found = flags(unsafe { marks(bytes, at) });
            if found != 0 {
                return Ok(at + found.trailing_zeros() as usize);
            }
            at += 32;
        }
        Err(at)
    }

    /// [`find`], storing each block it looks at to `dst` (byte `from` of
    /// `bytes` to `dst`), the block with the byte found too.
    ///
    /// # Safety
    ///
    /// `dst` is valid for writes of `bytes.len() - from` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn copy_plain(bytes: &[u8], from: usize, dst: *mut u8) -> Result<usize, usize> {
        let mut at = from;
        while at + 128 <= bytes.len() {
            // SAFETY: the four blocks end at `at + 128`, within `bytes`, and
            // their stores within `dst`'s `bytes.len() - from` bytes.
            let (a, b, c, d) = unsafe {
                let blocks = (
                    load(bytes, at),
                    load(bytes, at + 32),
                    load(bytes, at + 64),
                    load(bytes, at + 96),
                );
                store(dst, at - from, blocks.0);
                store(dst, at - from + 32, blocks.1);
                store(dst, at - from + 64, blocks.2);
                store(dst, at - from + 96, blocks.3);
                (
                    marks_of(blocks.0),
                    marks_of(blocks.1),
                    marks_of(blocks.2),
                    marks_of(blocks.3),
                )
            };
            if let Some(found) = first_mark(at, [a, b, c, d]) {
                return Ok(found);
            }
            at += 128;
        }
        while at + 32 <= bytes.len() {
            // SAFETY: as above, for one block.
            let found = unsafe {
                let x = load(bytes, at);
                store(dst, at - from, x);
                flags(marks_of(x))
            };
            if found != 0 {
                return Ok(at + found.trailing_zeros() as usize);
            }
            at += 32;
        }
        Err(at)
    }

    /// Copies `src[from..]` to `dst + from` in 32-byte blocks, each stored
    /// by `put(at, block)`, four at a time while four fit; then the last 32
    /// bytes of `src` with a plain store (overlapping the block before).
    ///
    /// # Safety
    ///
    /// `32 <= src.len()`, `from <= src.len()`, `dst` is valid for writes of
    /// `src.len()` bytes, and `put` is safe to call for every `at + 32 <=
    /// src.len()`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn blocks(src: &[u8], dst: *mut u8, from: usize, put: impl Fn(usize, __m256i)) {
        let mut at = from;
        // SAFETY: every load ends within `src` (the loops' conditions); the
        // last store ends at `dst + src.len()`.
        unsafe {
            while at + 128 <= src.len() {
                let blocks = (
                    load(src, at),
                    load(src, at + 32),
                    load(src, at + 64),
                    load(src, at + 96),
                );
                put(at, blocks.0);
                put(at + 32, blocks.1);
                put(at + 64, blocks.2);
                put(at + 96, blocks.3);
                at += 128;
            }
            while at + 32 <= src.len() {
                put(at, load(src, at));
                at += 32;
            }
            if at < src.len() {
                let last = src.len() - 32;
                store(dst, last, load(src, last));
            }
        }
    }

    /// Copies `src` to `dst`, 32 bytes per move, the last move ending at
    /// the end (and overlapping the one before).
    ///
    /// # Safety
    ///
    /// `src.len() >= 32`, and `dst` is valid for writes of `src.len()` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn copy(src: &[u8], dst: *mut u8) {
        debug_assert!(src.len() >= 32);
        // SAFETY: `blocks` stores only within `src.len()` bytes of `dst`.
        unsafe { blocks(src, dst, 0, |at, x| store(dst, at, x)) }
    }

    /// [`copy`] with non-temporal stores to the 32-byte aligned blocks of
    /// `dst`, and plain stores to its unaligned ends.
    ///
    /// # Safety
    ///
    /// As [`copy`]; `src.len() >= 64`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn copy_streaming(src: &[u8], dst: *mut u8) {
        use std::arch::x86_64::{_mm256_stream_si256, _mm_sfence};
        debug_assert!(src.len() >= 64);
        // SAFETY: every store ends within `src.len()` bytes of `dst` (the
        // first aligned block starts within 31 bytes of it), and each
        // streaming store is to a 32-byte aligned address.
        unsafe {
            // The head, up to the first aligned byte, with a plain store;
            // the aligned blocks overlap it, with the same bytes.
            store(dst, 0, load(src, 0));
            let aligned = (32 - (dst as usize) % 32) % 32;
            blocks(src, dst, aligned, |at, x| {
                _mm256_stream_si256(dst.add(at).cast::<__m256i>(), x)
            });
            // Streaming stores are weakly ordered: done before anything that
            // follows (unlocking the ring to a reader on another core, say).
            _mm_sfence();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    /// Bit `i` is set if byte `at + i` needs an escape.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn flags(bytes: &[u8], at: usize) -> u64 {
        let block: &[u8; 16] = bytes[at..at + 16].try_into().expect("sixteen bytes");
        // SAFETY: `block` is 16 readable bytes, and an unaligned load
        // requires no alignment.
        let x = unsafe { _mm_loadu_si128(block.as_ptr().cast::<__m128i>()) };
        let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
        // Below 0x20, unsigned: min(x, 0x1f) == x.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);
        u64::from(_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u16)
    }

    /// `Ok` with the index of the first byte that needs an escape, or
    /// `Err` with where fewer than 16 bytes are left to look at.
    #[target_feature(enable = "sse2")]
    pub(super) fn find(bytes: &[u8], mut at: usize) -> Result<usize, usize> {
        while at + 64 <= bytes.len() {
            let all = flags(bytes, at)
                | flags(bytes, at + 16) << 16
                | flags(bytes, at + 32) << 32
                | flags(bytes, at + 48) << 48;
            if all != 0 {
                return Ok(at + all.trailing_zeros() as usize);
            }
            at += 64;
        }
        while at + 16 <= bytes.len() {
            let found = flags(bytes, at);
            if found != 0 {
                return Ok(at + found.trailing_zeros() as usize);
            }
            at += 16;
        }
        Err(at)
    }
}

/// Appends `value` as compact JSON, keys in the map's order.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => serde_json::to_writer(&mut *out, n).expect("writing to a Vec cannot fail"),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Writes a JSON object one field at a time.
pub(crate) struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Keys are the protocol's own field names, which need no escape: they
    /// are copied as they are, not scanned.
    fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        debug_assert!(
            !key.bytes().any(|b| NEEDS_ESCAPE[usize::from(b)]),
            "{key:?} needs an escape"
        );
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.reserve(key.len() + 3);
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub(crate) fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        let out = self.key(key);
        write_str(out, value);
        self
    }

    pub(crate) fn value(&mut self, key: &'static str, value: &Value) -> &mut Self {
        let out = self.key(key);
        write_value(out, value);
        self
    }

    pub(crate) fn u64(&mut self, key: &'static str, value: u64) -> &mut Self {
        let out = self.key(key);
        serde_json::to_writer(&mut *out, &value).expect("writing to a Vec cannot fail");
        self
    }

    pub(crate) fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        let out = self.key(key);
        out.extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// Writes a nested object's fields.
    pub(crate) fn object(&mut self, key: &'static str, fields: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        let out = self.key(key);
        let mut inner = Object::new(out);
        fields(&mut inner);
        inner.end();
        self
    }

    pub(crate) fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, value);
        out
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let values = [
            json!(null),
            json!(true),
            json!([false, 0, -1, 1.5, 1e300, -0.0, u64::MAX, i64::MIN]),
            json!({}),
            json!([]),
            json!({"b": {"c": [1, {"d": null}]}, "a": "z", "é": "ü"}),
            json!("quote \" backslash \\ slash / nl \n cr \r tab \t bs \u{8} ff \u{c} nul \u{0} us \u{1f} del \u{7f}"),
            json!("emoji 🦀 and 中文, then \"a long run without escapes, longer than eight bytes\""),
        ];
        for value in values {
            assert_eq!(
                String::from_utf8(ours(&value)).unwrap(),
                serde_json::to_string(&value).unwrap()
            );
        }
    }

    #[test]
    fn every_escape_at_every_offset_of_a_word() {
        // Each byte that needs an escape, and a few that do not, at each
        // position of a word and of a 16- and 64-byte block, in strings of
        // lengths around them.
        let specials = [
            '"', '\\', '\n', '\r', '\t', '\u{8}', '\u{c}', '\u{0}', '\u{1f}', ' ', '\u{7f}', 'é',
        ];
        for special in specials {
            for len in (0..20).chain([31, 32, 33, 47, 63, 64, 65, 80, 127, 128, 129, 150]) {
                for at in 0..len {
                    let s: String = (0..len).map(|i| if i == at { special } else { 'x' }).collect();
                    let value = Value::String(s);
                    assert_eq!(ours(&value), serde_json::to_vec(&value).unwrap(), "{value:?}");
                }
            }
        }
    }

    #[test]
    fn pseudo_random_strings_match() {
        // A fixed xorshift sequence over ASCII (controls included) and a
        // few multi-byte characters.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2_000 {
            let len = (next() % 64) as usize;
            let s: String = (0..len)
                .map(|_| match next() % 10 {
                    0 => ['ß', '€', '😀'][(next() % 3) as usize],
                    _ => char::from((next() % 128) as u8),
                })
                .collect();
            let value = Value::String(s);
            assert_eq!(ours(&value), serde_json::to_vec(&value).unwrap(), "{value:?}");
        }
    }

    #[test]
    fn the_table_and_the_escapes_agree_on_every_byte() {
        for byte in 0..=u8::MAX {
            assert_eq!(NEEDS_ESCAPE[usize::from(byte)], escape(byte).is_some(), "{byte:#04x}");
        }
    }

    /// Each scan this CPU has (AVX2, SSE2, words) finds the same byte, from
    /// every offset, in strings with an escape at every place of a block.
    #[test]
    fn every_scan_finds_the_same_byte() {
        #[cfg(target_arch = "x86_64")]
        let sse2 = |bytes: &[u8], from: usize| {
            // SAFETY: every x86_64 CPU has SSE2.
            unsafe { sse2::find(bytes, from) }.unwrap_or_else(|left| find_special_swar(bytes, left))
        };
        #[cfg(target_arch = "x86_64")]
        let avx2 = |bytes: &[u8], from: usize| {
            // SAFETY: called only when the CPU has AVX2 (below).
            unsafe { avx2::find(bytes, from) }.unwrap_or_else(|left| find_special_swar(bytes, left))
        };
        for special in [b'"', b'\\', b'\n', 0x00, 0x1f] {
            for len in (0..40).chain([63, 64, 65, 95, 96, 97, 127, 128, 129, 200]) {
                for at in (0..len).map(Some).chain([None]) {
                    let bytes: Vec<u8> = (0..len)
                        .map(|i| {
                            if Some(i) == at {
                                special
                            } else {
                                0xc3 ^ (i as u8 & 0x3f) | 0x20
                            }
                        })
                        .collect();
                    for from in 0..=len {
                        let want = find_special_swar(&bytes, from);
                        assert_eq!(want, at.filter(|&a| a >= from).unwrap_or(len), "{bytes:?} from {from}");
                        assert_eq!(find_special(&bytes, from), want);
                        #[cfg(target_arch = "x86_64")]
                        {
                            assert_eq!(sse2(&bytes, from), want, "sse2, {bytes:?} from {from}");
                            if std::arch::is_x86_feature_detected!("avx2") {
                                assert_eq!(avx2(&bytes, from), want, "avx2, {bytes:?} from {from}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Copies of every length around the vector loop's blocks and the long
    /// copy's threshold, to every offset of a block, copy every byte.
    #[test]
    fn copies_copy_every_byte() {
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 256) as u8).collect();
        let lens = (0..300).chain([1023, 1024, 1025, 1055, 1056, 1057, 1151, 1152, 1153, 4096, 4999]);
        for len in lens {
            for offset in [0, 1, 7, 31] {
                let part = &src[offset..offset + len.min(src.len() - offset)];
                let mut dst = vec![0xaau8; part.len()];
                copy(&mut dst, part);
                assert_eq!(dst, part, "copy of {len} from {offset}");
                let mut dst = vec![0xaau8; part.len() + 32];
                for at in [0, 1, 7, 16, 17, 31, 32] {
                    dst.fill(0xaa);
                    copy_streaming(&mut dst[at..at + part.len()], part);
                    assert_eq!(&dst[at..at + part.len()], part, "streaming copy of {len} to {at}");
                    assert!(dst[..at].iter().chain(&dst[at + part.len()..]).all(|&b| b == 0xaa));
                }
                let mut out = b"prefix".to_vec();
                append(&mut out, part);
                assert_eq!(&out[..6], b"prefix");
                assert_eq!(&out[6..], part, "append of {len} from {offset}");
            }
        }
        let text = "é".repeat(700);
        assert_eq!(owned(&text), text);
        let mut joined = String::from("ü");
        push_str(&mut joined, &text);
        assert_eq!(joined, format!("ü{text}"));
    }

    /// A long string with escapes far apart: the blocks stored past each
    /// escape are written over, never left in the output.
    #[test]
    fn long_runs_between_escapes_are_copied_whole() {
        for gap in [31, 32, 33, 127, 128, 129, 1000] {
            let s: String = (0..5).map(|i| format!("{}\n{i}\"", "x".repeat(gap))).collect();
            let value = Value::String(s);
            assert_eq!(ours(&value), serde_json::to_vec(&value).unwrap(), "gap {gap}");
        }
    }

    #[test]
    fn objects_are_written_field_by_field() {
        let mut out = Vec::new();
        let mut object = Object::new(&mut out);
        object
            .str("a", "x\"y")
            .u64("n", 7)
            .bool("t", true)
            .value("v", &json!([1]))
            .object("o", |inner| {
                inner.str("k", "v");
            });
        object.end();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":"x\"y","n":7,"t":true,"v":[1],"o":{"k":"v"}}"#
        );
    }
}
