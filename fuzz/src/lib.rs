//! Harness shared by the fuzz targets (and by `cargo test` in this crate, which replays the seed
//! corpus on a stable compiler). Each check panics when the parsers disagree with themselves.
//!
//! Input layout, both targets: byte 0 holds flags and `k` (bits 1..=3), the next `k` bytes are
//! chunk sizes (`b + 1`, cycled over the stream; `k == 0` means one byte at a time), the rest is
//! the stream.

pub mod agent;

use wsguard_common::frame::{Desync, DirCounters, FrameHeader, FrameState, Sink, NO_STATUS, WINDOW};
use wsguard_common::http::{HttpScan, Scan};

/// Splits a fuzz input into (flags, chunk sizes, stream).
pub fn split_input(data: &[u8]) -> (u8, Vec<usize>, &[u8]) {
    let Some((&b0, rest)) = data.split_first() else {
        return (0, vec![1], &[]);
    };
    let k = ((b0 >> 1) & 7) as usize;
    let k = k.min(rest.len());
    let sizes: Vec<usize> = if k == 0 { vec![1] } else { rest[..k].iter().map(|&b| b as usize + 1).collect() };
    (b0, sizes, &rest[k..])
}

/// Chunk boundaries of `len` bytes cut by cycling through `sizes`.
fn cuts(len: usize, sizes: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    loop {
        pos += sizes[i % sizes.len()];
        i += 1;
        if pos >= len {
            return out;
        }
        out.push(pos);
    }
}

// ---------------------------------------------------------------------------------------------
// Frame parser

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rec {
    pub c: DirCounters,
    pub codes: Vec<u16>,
    pub headers: Vec<(bool, bool, u8, bool, u64, u8, [u8; 4])>,
}

impl Sink for Rec {
    fn frame(&mut self, h: &FrameHeader) {
        self.c.record(h);
        self.headers.push((h.fin, h.rsv1, h.opcode, h.masked, h.payload_len, h.header_len, h.mask));
    }
    fn close_code(&mut self, code: u16) {
        self.codes.push(code);
    }
    fn payload(&mut self, n: u64) {
        self.c.payload(n);
    }
}

type Outcome = (Rec, Result<(), Desync>, Option<(u64, Vec<u8>, u8, u8, u8)>);

/// The state that must agree however the stream was cut (`None` after an error).
fn observable(s: &FrameState, res: &Result<(), Desync>) -> Option<(u64, Vec<u8>, u8, u8, u8)> {
    if res.is_err() {
        return None;
    }
    let n = (s.hdr_len as usize).min(WINDOW);
    let b0 = if s.close_got == 1 { s.close_b0 } else { 0 };
    Some((s.remaining, s.hdr[..n].to_vec(), s.flags, s.close_got, b0))
}

pub fn frame_whole(stream: &[u8], rsv1_ok: bool) -> Outcome {
    let mut st = FrameState::new(rsv1_ok);
    let mut r = Rec::default();
    let res = st.feed(stream, &mut r);
    let o = observable(&st, &res);
    (r, res, o)
}

pub fn frame_chunked(stream: &[u8], sizes: &[usize], rsv1_ok: bool) -> Outcome {
    let mut st = FrameState::new(rsv1_ok);
    let mut r = Rec::default();
    let mut start = 0;
    for end in cuts(stream.len(), sizes).into_iter().chain(std::iter::once(stream.len())) {
        if let Err(e) = st.feed(&stream[start..end], &mut r) {
            return (r, Err(e), None);
        }
        start = end;
    }
    let o = observable(&st, &Ok(()));
    (r, Ok(()), o)
}

/// Drives `skippable`/`skip`/`consume` like the probe: payload skipped in steps, windows shorter
/// than `WINDOW` with junk after their length.
pub fn frame_kernel_like(stream: &[u8], sizes: &[usize], rsv1_ok: bool) -> Outcome {
    let mut st = FrameState::new(rsv1_ok);
    let mut r = Rec::default();
    let mut pos = 0usize;
    let mut i = 0usize;
    while pos < stream.len() {
        let step = sizes[i % sizes.len()];
        i += 1;
        let left = (stream.len() - pos) as u64;
        let can = st.skippable().min(left);
        if can > 0 {
            let n = can.min(step as u64);
            st.skip(n, &mut r);
            pos += n as usize;
            continue;
        }
        let n = ((step - 1) % WINDOW + 1).min(stream.len() - pos);
        let mut win = [0x5Au8 ^ (i as u8); WINDOW];
        win[..n].copy_from_slice(&stream[pos..pos + n]);
        match st.consume(&win, n, &mut r) {
            Ok(used) => {
                assert!(used >= 1 && used <= n, "consume took {used} of {n} bytes");
                pos += used;
            }
            Err(e) => return (r, Err(e), None),
        }
    }
    let o = observable(&st, &Ok(()));
    (r, Ok(()), o)
}

/// Plain non-streaming reading of RFC 6455 framing with the parser's documented checks.
pub fn frame_reference(data: &[u8], rsv1_ok: bool) -> (Rec, Result<(), Desync>) {
    let mut r = Rec::default();
    let mut pos = 0usize;
    loop {
        let rest = &data[pos..];
        if rest.len() < 2 {
            return (r, Ok(()));
        }
        let (b0, b1) = (rest[0], rest[1]);
        let op = b0 & 0x0f;
        if !matches!(op, 0x0 | 0x1 | 0x2 | 0x8 | 0x9 | 0xA) {
            return (r, Err(Desync::ReservedOpcode));
        }
        if b0 & 0x30 != 0 {
            return (r, Err(Desync::BadRsv));
        }
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let control = op >= 0x8;
        if control && ext != 0 {
            return (r, Err(Desync::ControlTooLong));
        }
        if control && !fin {
            return (r, Err(Desync::ControlFragmented));
        }
        let hlen = 2 + ext + if masked { 4 } else { 0 };
        if rest.len() < hlen {
            return (r, Ok(()));
        }
        let len: u64 = match ext {
            2 => u16::from_be_bytes([rest[2], rest[3]]) as u64,
            8 => {
                let v = u64::from_be_bytes(rest[2..10].try_into().unwrap());
                if v >> 63 != 0 {
                    return (r, Err(Desync::BadLength));
                }
                v
            }
            _ => (b1 & 0x7f) as u64,
        };
        let rsv1 = b0 & 0x40 != 0;
        if rsv1 && (!rsv1_ok || control) {
            return (r, Err(Desync::BadRsv));
        }
        let mut mask = [0u8; 4];
        if masked {
            mask.copy_from_slice(&rest[2 + ext..hlen]);
        }
        r.frame(&FrameHeader { fin, rsv1, opcode: op, masked, payload_len: len, header_len: hlen as u8, mask });
        let payload = &rest[hlen..];
        if op == 0x8 {
            if len < 2 {
                r.close_code(NO_STATUS);
            } else if payload.len() >= 2 {
                r.close_code(u16::from_be_bytes([payload[0] ^ mask[0], payload[1] ^ mask[1]]));
            }
        }
        // Payload counts as far as it arrived, never as declared.
        r.payload(len.min(payload.len() as u64));
        if (payload.len() as u64) < len {
            return (r, Ok(()));
        }
        pos += hlen + len as usize;
    }
}

/// `frame_split` target: whole, chunked and probe-style feeding agree with each other (counters,
/// close codes, headers, error and state) and with the reference reading.
pub fn check_frame_split(data: &[u8]) {
    let (flags, sizes, stream) = split_input(data);
    let rsv1_ok = flags & 1 != 0;
    let whole = frame_whole(stream, rsv1_ok);
    let chunked = frame_chunked(stream, &sizes, rsv1_ok);
    assert_eq!(whole, chunked, "whole vs chunked (sizes {sizes:?})");
    let kernel = frame_kernel_like(stream, &sizes, rsv1_ok);
    assert_eq!(whole, kernel, "whole vs probe-style (sizes {sizes:?})");
    let (r, res) = frame_reference(stream, rsv1_ok);
    assert_eq!((&whole.0, &whole.1), (&r, &res), "parser vs reference");
    // Invariants of the counters themselves.
    assert_eq!(whole.0.c.total_frames(), whole.0.headers.len() as u64);
    assert_eq!(whole.0.codes.len() as u64, whole.0.c.frames[wsguard_common::frame::slot::CLOSE] - pending_close(&whole));
}

/// 1 if the last frame is a close frame whose status code has not fully arrived yet.
fn pending_close(o: &Outcome) -> u64 {
    match (&o.2, o.0.headers.last()) {
        (Some((_, _, flags, _, _)), Some(h)) if h.2 == 0x8 && flags & 1 != 0 => 1,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake scanner

/// (consumed, verdict, found, status, total) of a scan.
pub type HttpOutcome = (usize, Scan, bool, u16, u32);

pub fn http_whole(side: u8, stream: &[u8]) -> HttpOutcome {
    let mut s = HttpScan::new(side);
    let (n, v) = s.feed(stream);
    (n, v, s.found(), s.status, s.total)
}

pub fn http_chunked(side: u8, stream: &[u8], sizes: &[usize]) -> HttpOutcome {
    let mut s = HttpScan::new(side);
    let mut start = 0;
    for end in cuts(stream.len(), sizes).into_iter().chain(std::iter::once(stream.len())) {
        let (n, v) = s.feed(&stream[start..end]);
        if v != Scan::More {
            return (start + n, v, s.found(), s.status, s.total);
        }
        assert_eq!(n, end - start, "More must consume everything");
        start = end;
    }
    (stream.len(), Scan::More, s.found(), s.status, s.total)
}

/// The probe's way: `consume` on windows of varying length with junk after the length.
pub fn http_kernel_like(side: u8, stream: &[u8], sizes: &[usize]) -> HttpOutcome {
    let mut s = HttpScan::new(side);
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = ((sizes[i % sizes.len()] - 1) % WINDOW + 1).min(stream.len() - pos);
        i += 1;
        let mut win = [b'\n'; WINDOW]; // junk that would end a head if it were read
        win[..n].copy_from_slice(&stream[pos..pos + n]);
        let (used, v) = s.consume(&win, n);
        assert!(used <= n, "consume took {used} of {n} bytes");
        pos += used;
        if v != Scan::More {
            return (pos, v, s.found(), s.status, s.total);
        }
        assert_eq!(used, n, "More must consume the whole window");
    }
    (pos, Scan::More, s.found(), s.status, s.total)
}

/// `http_scan` target: whole, chunked and probe-style scans give the same verdict, consumed
/// count, found flag and status; a `Done` stops right after a blank line.
pub fn check_http_scan(data: &[u8]) {
    let (flags, sizes, stream) = split_input(data);
    let side = flags & 1;
    let whole = http_whole(side, stream);
    assert_eq!(whole, http_chunked(side, stream, &sizes), "whole vs chunked (sizes {sizes:?})");
    assert_eq!(whole, http_kernel_like(side, stream, &sizes), "whole vs probe-style (sizes {sizes:?})");
    let (n, v, _, _, _) = whole;
    assert!(n <= stream.len());
    match v {
        Scan::Done => assert!(stream[..n].ends_with(b"\n"), "Done not at a line end"),
        Scan::More => assert_eq!(n, stream.len()),
        Scan::NotHttp => assert!(n >= 1),
    }
    if v == Scan::Done {
        // Consumed bytes never exceed the head limit, and the part before is a head: the
        // prefix without its last byte is still `More`.
        assert!(n as u32 <= wsguard_common::http::MAX_HEAD);
        let mut s = HttpScan::new(side);
        assert_eq!(s.feed(&stream[..n - 1]), (n - 1, Scan::More));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn replay(target: &str, check: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
        let mut n = 0;
        for e in fs::read_dir(&dir).unwrap() {
            let data = fs::read(e.unwrap().path()).unwrap();
            check(&data);
            n += 1;
        }
        n
    }

    #[test]
    fn seed_corpus_frame_split() {
        assert!(replay("frame_split", check_frame_split) >= 3);
    }

    #[test]
    fn seed_corpus_http_scan() {
        assert!(replay("http_scan", check_http_scan) >= 3);
    }

    #[test]
    fn seed_corpus_config_parse() {
        assert!(replay("config_parse", agent::check_config) >= 3);
    }

    #[test]
    fn seed_corpus_api_inputs() {
        let n = replay("api_inputs", agent::check_api);
        let _ = fs::remove_dir_all(agent::scratch_dir());
        assert!(n >= 3);
    }

    #[test]
    fn empty_and_tiny_inputs() {
        for d in [&[][..], &[0], &[0xff], &[0x0e, 1, 2, 3, 4, 5, 6, 7, 0x81]] {
            check_frame_split(d);
            check_http_scan(d);
        }
    }
}
