//! W3C Trace Context: `traceparent` (and `tracestate`, passed through).
//!
//! Each hop keeps the trace id, records the caller's span id as its parent,
//! and makes a span id of its own, which it sends downstream as the parent.
//! So across `edge -> A -> B`, B's parent is A's span, and A's parent is the
//! edge's span.

use std::fmt;

use http::HeaderValue;

/// The `traceparent` header.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

const MAX_TRACESTATE_LEN: usize = 512;

/// A 16-byte trace id, never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// An 8-byte span id, never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

/// This hop's place in a distributed trace.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    flags: u8,
    tracestate: Option<HeaderValue>,
}

/// A `traceparent` value that breaks the W3C rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTraceparent(());

// === impl TraceId ===

impl TraceId {
    /// A random trace id.
    pub fn random() -> Self {
        let mut b: [u8; 16] = crate::rng::bytes();
        if b == [0; 16] {
            b[15] = 1;
        }
        Self(b)
    }

    /// The bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

// === impl SpanId ===

impl SpanId {
    /// A random span id.
    pub fn random() -> Self {
        let mut b: [u8; 8] = crate::rng::bytes();
        if b == [0; 8] {
            b[7] = 1;
        }
        Self(b)
    }

    /// The bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

// === impl TraceContext ===

impl TraceContext {
    /// A new trace, with this hop as its root (sampled flag set).
    pub fn new_root() -> Self {
        Self {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent_id: None,
            flags: 0x01,
            tracestate: None,
        }
    }

    /// This hop's context, as a child of an inbound `traceparent`: same trace
    /// id and flags, the caller's span as parent, a new span id.
    ///
    /// # Errors
    /// - the value breaks the W3C `traceparent` rules: a version other than
    ///   two lowercase hex digits or `ff`; a trace id that is not 32 lowercase
    ///   hex digits or is all zeros; a parent id that is not 16 lowercase hex
    ///   digits or is all zeros; flags that are not two hex digits; a
    ///   version-00 value of another length than 55
    pub fn child_of(traceparent: &[u8]) -> Result<Self, InvalidTraceparent> {
        let (trace_id, parent, flags) = parse_traceparent(traceparent)?;
        Ok(Self {
            trace_id,
            span_id: SpanId::random(),
            parent_id: Some(parent),
            flags,
            tracestate: None,
        })
    }

    /// Keeps an inbound `tracestate` to pass on, if it is at most 512
    /// printable ASCII characters; otherwise drops it.
    #[must_use]
    pub fn with_tracestate(mut self, value: Option<&HeaderValue>) -> Self {
        self.tracestate = value
            .filter(|v| {
                v.len() <= MAX_TRACESTATE_LEN
                    && v.as_bytes().iter().all(|b| (0x20..0x7f).contains(b))
            })
            .cloned();
        self
    }

    /// The trace id, shared by every hop.
    pub const fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This hop's span id: the parent of every call it makes.
    pub const fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The caller's span id, if the trace came in from a caller.
    pub const fn parent_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// The trace flags (bit 0: sampled).
    pub const fn flags(&self) -> u8 {
        self.flags
    }

    /// The `tracestate` passed through, if any.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// The `traceparent` to send downstream: this trace, this hop's span as
    /// the parent. It owns exactly its 55 bytes (one allocation), so it can
    /// be kept; the client layer sends a cheaper one of its own.
    pub fn to_traceparent(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.traceparent_bytes()).expect("hex and dashes")
    }

    /// [`to_traceparent`](Self::to_traceparent) for the request path: cut
    /// from a shared per-thread buffer, so clones only count references and
    /// most values allocate nothing, but a value kept alive keeps the buffer.
    pub(crate) fn to_traceparent_shared(&self) -> HeaderValue {
        crate::value::carve(&self.traceparent_bytes())
    }

    fn traceparent_bytes(&self) -> [u8; 55] {
        traceparent_bytes(&self.trace_id.0, &self.span_id.0, self.flags)
    }

    /// A context with these parts (the OpenTelemetry span's ids, once the
    /// `request` span joined the trace). The caller checks that the ids are
    /// not all zeros.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn from_parts(
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent_id: Option<SpanId>,
        flags: u8,
        tracestate: Option<HeaderValue>,
    ) -> Self {
        Self {
            trace_id: TraceId(trace_id),
            span_id: SpanId(span_id),
            parent_id,
            flags,
            tracestate,
        }
    }
}

/// A version-00 `traceparent`: this trace, `span` as the parent.
pub(crate) fn traceparent_bytes(trace: &[u8; 16], span: &[u8; 8], flags: u8) -> [u8; 55] {
    let mut buf = [0u8; 55];
    buf[..3].copy_from_slice(b"00-");
    hex_into(&mut buf[3..35], trace);
    buf[35] = b'-';
    hex_into(&mut buf[36..52], span);
    buf[52] = b'-';
    hex_into(&mut buf[53..55], &[flags]);
    buf
}

// === impl InvalidTraceparent ===

impl fmt::Display for InvalidTraceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid traceparent")
    }
}

impl std::error::Error for InvalidTraceparent {}

fn parse_traceparent(b: &[u8]) -> Result<(TraceId, SpanId, u8), InvalidTraceparent> {
    let err = InvalidTraceparent(());
    let Some(head) = b.first_chunk::<55>() else {
        return Err(err);
    };
    let version = hex_byte(head[0], head[1]).ok_or(err)?;
    if version == 0xff || head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
        return Err(err);
    }
    // Version 00 is exactly 55 long; later versions may append "-...".
    if (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return Err(err);
    }
    let (trace, bad_trace) = decode::<16, 32>(head[3..35].try_into().expect("32 digits"));
    let (span, bad_span) = decode::<8, 16>(head[36..52].try_into().expect("16 digits"));
    let flags = hex_byte(head[53], head[54]).ok_or(err)?;
    if bad_trace || bad_span || trace == [0; 16] || span == [0; 8] {
        return Err(err);
    }
    Ok((TraceId(trace), SpanId(span), flags))
}

/// Decodes `M = 2 * N` lowercase hex digits; the flag is set if any is not
/// one. Eight digits at a time in a `u64` (SWAR): about a fifth of the
/// instructions of a table lookup per digit.
#[inline]
fn decode<const N: usize, const M: usize>(hex: &[u8; M]) -> ([u8; N], bool) {
    const { assert!(M == 2 * N && M % 8 == 0) };
    let mut out = [0u8; N];
    let mut bad = false;
    for (digits, bytes) in hex.chunks_exact(8).zip(out.chunks_exact_mut(4)) {
        let word = u64::from_le_bytes(digits.try_into().expect("8 digits"));
        let (value, ok) = unhex8(word);
        bytes.copy_from_slice(&value.to_le_bytes());
        bad |= !ok;
    }
    (out, bad)
}

/// Eight lowercase hex digits (little-endian in `x`, first digit lowest) to
/// four bytes, and whether all eight were lowercase hex digits.
#[inline]
fn unhex8(x: u64) -> (u32, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Bytes below 0x80 only: then adding at most 0x50 carries into no
    // neighbour, and bit 7 of each sum says whether the byte reached the
    // bound.
    let ascii = x & HIGH == 0;
    let at_least = |bound: u64| x.wrapping_add((0x80 - bound) * ONES) & HIGH;
    let digit = at_least(0x30) & !at_least(0x3a);
    let letter = at_least(0x61) & !at_least(0x67);
    let ok = ascii && (digit | letter) == HIGH;
    // '0'..'9' keep their low nibble; 'a'..'f' (low nibble 1..6) add 9.
    let nibbles = (x & (0x0f * ONES)) + (letter >> 7) * 9;
    // Pairs of nibbles into bytes, then the four bytes together.
    let pairs = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    let packed = (quads | (quads >> 16)) as u32;
    (packed, ok)
}

/// Two lowercase hex digits.
#[inline]
fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    let (h, l) = (UNHEX[usize::from(hi)], UNHEX[usize::from(lo)]);
    if (h | l) & 0xf0 != 0 {
        None
    } else {
        Some(h << 4 | l)
    }
}

/// Lowercase hex digit values; 0xff marks anything else.
static UNHEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes` into `out` (twice as long): four bytes at a
/// time in a `u64` (SWAR), the rest by table.
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    let mut four = bytes.chunks_exact(4);
    let mut eight = out.chunks_exact_mut(8);
    for (b, o) in (&mut four).zip(&mut eight) {
        o.copy_from_slice(&hex4(b.try_into().expect("4 bytes")));
    }
    let rest = four.remainder();
    let out = &mut out[(bytes.len() - rest.len()) * 2..];
    for (i, b) in rest.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

/// Four bytes to eight lowercase hex digits.
#[inline]
fn hex4(b: [u8; 4]) -> [u8; 8] {
    const NIBBLES: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    let x = u64::from(u32::from_le_bytes(b));
    // Byte i to byte 2i.
    let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    // Its high nibble stays in byte 2i, its low one goes to byte 2i + 1.
    let n = ((x >> 4) & NIBBLES) | ((x & NIBBLES) << 8);
    // '0' + n, and 'a' - '0' - 10 more where n > 9 (no byte carries).
    let letters = ((n + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (n + 0x3030_3030_3030_3030 + letters * 39).to_le_bytes()
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut buf = [0u8; 32];
    let out = &mut buf[..bytes.len() * 2];
    hex_into(out, bytes);
    f.write_str(std::str::from_utf8(out).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let ctx = TraceContext::child_of(VALID.as_bytes()).unwrap();
        assert_eq!(
            ctx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(ctx.parent_id().unwrap().to_string(), "00f067aa0ba902b7");
        assert_ne!(ctx.span_id(), ctx.parent_id().unwrap());
        assert_eq!(ctx.flags(), 1);
        let out = ctx.to_traceparent();
        let out = out.to_str().unwrap();
        assert_eq!(&out[..36], &VALID[..36]);
        assert_eq!(&out[36..52], ctx.span_id().to_string());
        assert_eq!(&out[52..], "-01");
    }

    #[test]
    fn rejects_what_the_spec_rejects() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for b in bad {
            assert!(TraceContext::child_of(b.as_bytes()).is_err(), "{b:?}");
        }
        // A future version may append fields after a dash.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(TraceContext::child_of(future.as_bytes()).is_ok());
    }

    #[test]
    fn roots_are_valid() {
        let root = TraceContext::new_root();
        assert!(root.parent_id().is_none());
        let tp = root.to_traceparent();
        let child = TraceContext::child_of(tp.as_bytes()).unwrap();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_eq!(child.parent_id(), Some(root.span_id()));
    }

    #[test]
    fn every_byte_in_every_hex_position() {
        let valid = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        for pos in (3..35).chain(36..52).chain(53..55) {
            for b in 0..=255u8 {
                let mut tp = VALID.as_bytes().to_vec();
                tp[pos] = b;
                let ok = TraceContext::child_of(&tp).is_ok();
                let zeroed =
                    tp[3..35].iter().all(|&c| c == b'0') || tp[36..52].iter().all(|&c| c == b'0');
                assert_eq!(ok, valid(b) && !zeroed, "byte {b:#x} at {pos}");
            }
        }
    }

    #[test]
    fn hex_matches_the_formatter() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let bytes = state.to_le_bytes();
            for len in 0..=8 {
                let mut out = [0u8; 16];
                hex_into(&mut out[..2 * len], &bytes[..len]);
                let expected: String = bytes[..len].iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(&out[..2 * len], expected.as_bytes());
            }
        }
        let all: Vec<u8> = (0..=255).collect();
        let mut out = vec![0u8; 512];
        hex_into(&mut out, &all);
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(out, expected.as_bytes());
    }

    #[test]
    fn tracestate_is_bounded() {
        let ok = HeaderValue::from_static("congo=t61rcWkgMzE");
        let ctx = TraceContext::new_root().with_tracestate(Some(&ok));
        assert_eq!(ctx.tracestate(), Some(&ok));
        let long = HeaderValue::from_str(&"a".repeat(513)).unwrap();
        assert!(
            TraceContext::new_root()
                .with_tracestate(Some(&long))
                .tracestate()
                .is_none()
        );
        let tab = HeaderValue::from_static("a\tb");
        assert!(
            TraceContext::new_root()
                .with_tracestate(Some(&tab))
                .tracestate()
                .is_none()
        );
    }
}
