//! Unit tests of the frame parser on hand-made frames. Property tests (any cut gives the same
//! counts) and frames encoded by an independent library live in `tests/` of this crate.
use super::*;

#[derive(Default, Debug, PartialEq)]
struct Rec {
    c: DirCounters,
    codes: [u16; 8],
    n_codes: usize,
}

impl Sink for Rec {
    fn frame(&mut self, h: &FrameHeader) {
        self.c.record(h);
    }
    fn close_code(&mut self, code: u16) {
        self.codes[self.n_codes] = code;
        self.n_codes += 1;
    }
    fn payload(&mut self, n: u64) {
        self.c.payload(n);
    }
}

fn frame(fin: bool, op: u8, payload: &[u8], mask: Option<[u8; 4]>) -> std::vec::Vec<u8> {
    extern crate std;
    let mut v = std::vec::Vec::new();
    v.push(if fin { 0x80 } else { 0 } | op);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => v.push(m | n as u8),
        n if n <= 0xffff => {
            v.push(m | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            v.push(m | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if let Some(k) = mask {
        v.extend_from_slice(&k);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
    } else {
        v.extend_from_slice(payload);
    }
    v
}

extern crate std;
use std::vec::Vec;

#[test]
fn counts_opcodes_messages_bytes() {
    let mut s: Vec<u8> = Vec::new();
    s.extend(frame(true, opcode::TEXT, b"hello", None));
    s.extend(frame(false, opcode::BINARY, &[0; 300], Some([1, 2, 3, 4])));
    s.extend(frame(true, opcode::PING, b"p", None));
    s.extend(frame(true, opcode::CONTINUATION, &[0; 70000], None));
    s.extend(frame(true, opcode::PONG, b"", Some([9, 9, 9, 9])));
    s.extend(frame(true, opcode::CLOSE, &[0x03, 0xe8, b'x'], Some([0xaa, 0xbb, 0xcc, 0xdd])));
    let mut st = FrameState::new(false);
    let mut r = Rec::default();
    st.feed(&s, &mut r).unwrap();
    assert_eq!(r.c.frames, [1, 1, 1, 1, 1, 1]);
    assert_eq!(r.c.messages, 2);
    assert_eq!(r.c.payload_bytes, 5 + 300 + 1 + 70000 + 3);
    assert_eq!(&r.codes[..r.n_codes], &[1000]);
    assert!(st.at_boundary());
}

#[test]
fn byte_by_byte_equals_whole() {
    let mut s: Vec<u8> = Vec::new();
    s.extend(frame(true, opcode::CLOSE, &[0x0f, 0xa0], Some([0x11, 0x22, 0x33, 0x44])));
    s.extend(frame(true, opcode::TEXT, &[7; 200], Some([5, 6, 7, 8])));
    let mut whole = Rec::default();
    FrameState::new(false).feed(&s, &mut whole).unwrap();
    let mut st = FrameState::new(false);
    let mut bytes = Rec::default();
    for b in &s {
        st.feed(core::slice::from_ref(b), &mut bytes).unwrap();
    }
    assert_eq!(whole, bytes);
    assert_eq!(&bytes.codes[..1], &[4000]);
}

#[test]
fn close_without_code_is_1005() {
    let mut r = Rec::default();
    FrameState::new(false).feed(&frame(true, opcode::CLOSE, b"", None), &mut r).unwrap();
    assert_eq!(&r.codes[..r.n_codes], &[NO_STATUS]);
}

#[test]
fn invalid_frames_desync() {
    let cases: [(&[u8], Desync); 6] = [
        (&[0x83, 0x00], Desync::ReservedOpcode),
        (&[0x8B, 0x00], Desync::ReservedOpcode),
        (&[0x89, 0x7e, 0x00, 0x7e], Desync::ControlTooLong),
        (&[0x09, 0x00], Desync::ControlFragmented),
        (&[0xA1, 0x00], Desync::BadRsv),
        (&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0], Desync::BadLength),
    ];
    for (bytes, want) in cases {
        let mut r = Rec::default();
        assert_eq!(FrameState::new(true).feed(bytes, &mut r), Err(want), "{bytes:x?}");
    }
    // RSV1 needs a negotiated extension, and never on control frames.
    let mut r = Rec::default();
    assert_eq!(FrameState::new(false).feed(&[0xC1, 0x00], &mut r), Err(Desync::BadRsv));
    assert_eq!(FrameState::new(true).feed(&[0xC1, 0x00], &mut r), Ok(()));
    assert_eq!(FrameState::new(true).feed(&[0xC9, 0x00], &mut r), Err(Desync::BadRsv));
}

#[test]
fn huge_declared_length_is_skipped_arithmetically() {
    let mut st = FrameState::new(false);
    let mut r = Rec::default();
    let hdr = [0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    st.feed(&hdr, &mut r).unwrap();
    assert_eq!((r.c.frames[slot::BINARY], r.c.payload_bytes), (1, 0), "the frame counts, its declared bytes do not");
    st.feed(&[0u8; 4096], &mut r).unwrap();
    assert_eq!(r.c.frames[slot::BINARY], 1);
    assert_eq!(r.c.payload_bytes, 4096);
    assert_eq!(st.remaining, (1u64 << 63) - 1 - 4096);
    // Two such frames would have wrapped a u64 when lengths counted as declared.
    let mut st = FrameState::new(false);
    let mut r = Rec::default();
    st.feed(&hdr, &mut r).unwrap();
    st.feed(&[0u8; 10], &mut r).unwrap();
    st.remaining = 0; // as if the rest had passed uncounted: a second header follows
    st.feed(&hdr, &mut r).unwrap();
    st.feed(&[0u8; 7], &mut r).unwrap();
    assert_eq!((r.c.frames[slot::BINARY], r.c.payload_bytes), (2, 17));
}

#[test]
fn incomplete_frames_count_only_what_was_sent() {
    // A 300-byte text frame cut after 100 payload bytes, then the rest.
    let f = frame(true, opcode::TEXT, &[b'a'; 300], Some([1, 2, 3, 4]));
    let mut st = FrameState::new(false);
    let mut r = Rec::default();
    st.feed(&f[..8 + 100], &mut r).unwrap();
    assert_eq!((r.c.frames[slot::TEXT], r.c.messages, r.c.payload_bytes), (1, 1, 100));
    st.feed(&f[108..], &mut r).unwrap();
    assert_eq!(r.c.payload_bytes, 300);
    // A close frame (code + 3 reason bytes) cut inside its code: the code byte that came counts.
    let f = frame(true, opcode::CLOSE, &[0x03, 0xe9, b'b', b'y', b'e'], Some([9, 8, 7, 6]));
    let mut st = FrameState::new(false);
    let mut r = Rec::default();
    st.feed(&f[..7], &mut r).unwrap();
    assert_eq!((r.c.frames[slot::CLOSE], r.c.payload_bytes, r.n_codes), (1, 1, 0));
    st.feed(&f[7..8], &mut r).unwrap();
    assert_eq!((r.c.payload_bytes, &r.codes[..r.n_codes]), (2, &[1001u16][..]));
    st.feed(&f[8..], &mut r).unwrap();
    assert_eq!(r.c.payload_bytes, 5);
    assert!(st.at_boundary());
}

#[test]
fn every_prefix_counts_the_payload_seen_so_far() {
    let parts = [
        frame(true, opcode::TEXT, b"hello", None),
        frame(true, opcode::CLOSE, &[0x03, 0xe8, b'x'], Some([0xaa, 0xbb, 0xcc, 0xdd])),
        frame(false, opcode::BINARY, &[3; 200], Some([1, 2, 3, 4])),
        frame(true, opcode::PING, b"", None),
        frame(true, opcode::CONTINUATION, &[4; 70], None),
    ];
    let hdr_lens = [2usize, 6, 8, 2, 2];
    let s: Vec<u8> = parts.concat();
    for k in 0..=s.len() {
        // Payload bytes inside s[..k], from where each frame lies.
        let mut want = 0u64;
        let mut start = 0usize;
        for (p, h) in parts.iter().zip(hdr_lens) {
            let body = start + h;
            want += k.clamp(body, start + p.len()).saturating_sub(body) as u64;
            start += p.len();
        }
        let mut r = Rec::default();
        FrameState::new(false).feed(&s[..k], &mut r).unwrap();
        assert_eq!(r.c.payload_bytes, want, "prefix of {k} bytes");
    }
}

#[test]
fn many_tiny_frames() {
    let s: Vec<u8> = (0..32768).flat_map(|_| [0x81u8, 0x00]).collect();
    let mut r = Rec::default();
    FrameState::new(false).feed(&s, &mut r).unwrap();
    assert_eq!(r.c.frames[slot::TEXT], 32768);
    assert_eq!(r.c.messages, 32768);
}
