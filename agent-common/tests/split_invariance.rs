//! Property tests of the streaming frame parser (`wsguard_common::frame`).
//!
//! * Valid frame sequences (every opcode, fragmentation with interleaved control frames, masked
//!   and unmasked, 7/16/64-bit length encodings with the 125/126/65535/65536 boundaries, close
//!   frames with and without a status code, RSV1 when deflate was negotiated) are encoded by a
//!   small encoder in this file, cut at arbitrary points (1-byte chunks, cuts inside headers and
//!   inside close codes) and fed chunk by chunk. The counters, the close codes and the decoded
//!   headers must equal those of feeding the whole stream, and equal the truth computed from the
//!   generated frames.
//! * The kernel drives the parser differently from `feed` (it skips payload in steps it chooses
//!   and hands `consume` windows shorter than `WINDOW`); a driver that does that with random
//!   step sizes must give the same results.
//! * Payload bytes count as they pass: after any prefix of a stream, the payload bytes counted
//!   are exactly those inside the prefix (a frame cut short adds what arrived, never its length).
//! * Random bytes never panic; a framing error is reported as `Err` (and by every way of cutting
//!   the stream, after the same counts), and agrees with a plain non-streaming reference parser.
#![allow(clippy::type_complexity)] // tuples of observable state, compared whole

use proptest::prelude::*;
use proptest::sample::Index;
use wsguard_common::frame::{opcode, slot, Desync, DirCounters, FrameHeader, FrameState, Sink, NO_STATUS, WINDOW};

// ---------------------------------------------------------------------------------------------
// Recording sink

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rec {
    c: DirCounters,
    codes: Vec<u16>,
    /// (fin, rsv1, opcode, masked, payload_len, header_len, mask) of every header seen.
    headers: Vec<(bool, bool, u8, bool, u64, u8, [u8; 4])>,
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

/// The observable part of the parser state: what must agree however the stream was cut.
/// (Bytes of `hdr` past `hdr_len` are scratch and may differ.)
fn observable(s: &FrameState) -> (u64, Vec<u8>, u8, u8, u8) {
    let n = (s.hdr_len as usize).min(WINDOW);
    let b0 = if s.close_got == 1 { s.close_b0 } else { 0 };
    (s.remaining, s.hdr[..n].to_vec(), s.flags, s.close_got, b0)
}

// ---------------------------------------------------------------------------------------------
// Drivers

/// Feed `data` whole.
fn feed_whole(data: &[u8], rsv1_ok: bool) -> (Rec, FrameState, Result<(), Desync>) {
    let mut st = FrameState::new(rsv1_ok);
    let mut r = Rec::default();
    let res = st.feed(data, &mut r);
    (r, st, res)
}

/// Feed `data` in chunks ending at `cuts` (sorted, deduplicated, within `1..data.len()`).
/// Stops at the first error, like a caller that marks the connection out of sync.
fn feed_cut(data: &[u8], cuts: &[usize], rsv1_ok: bool) -> (Rec, FrameState, Result<(), Desync>) {
    let mut st = FrameState::new(rsv1_ok);
    let mut r = Rec::default();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        if let Err(e) = st.feed(&data[start..end], &mut r) {
            return (r, st, Err(e));
        }
        start = end;
    }
    (r, st, Ok(()))
}

/// Drive `skippable`/`skip`/`consume` the way the probe does, with step sizes from `steps`
/// (cycled): payload skipped in pieces of at most `step * 37 + 1` bytes, windows of
/// `1..=WINDOW` bytes, bytes past the window's length filled with junk (stale memory).
fn feed_kernel_like(data: &[u8], steps: &[u8], rsv1_ok: bool) -> (Rec, FrameState, Result<(), Desync>) {
    let mut st = FrameState::new(rsv1_ok);
    let mut r = Rec::default();
    let mut pos = 0usize;
    let mut k = 0usize;
    let mut step = || {
        let s = if steps.is_empty() { 0xff } else { steps[k % steps.len()] };
        k += 1;
        s
    };
    while pos < data.len() {
        let left = (data.len() - pos) as u64;
        let can = st.skippable().min(left);
        if can > 0 {
            let n = can.min(step() as u64 * 37 + 1);
            st.skip(n, &mut r);
            pos += n as usize;
            continue;
        }
        let want = (step() as usize % WINDOW) + 1;
        let n = want.min(data.len() - pos);
        let mut win = [0xA5u8; WINDOW];
        win[..n].copy_from_slice(&data[pos..pos + n]);
        match st.consume(&win, n, &mut r) {
            Ok(used) => {
                assert!(used >= 1 && used <= n, "consume used {used} of {n}");
                pos += used;
            }
            Err(e) => return (r, st, Err(e)),
        }
    }
    (r, st, Ok(()))
}

// ---------------------------------------------------------------------------------------------
// Frame model, encoder and truth

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LenEnc {
    /// The shortest encoding (RFC 6455 requires it).
    Minimal,
    /// Force the 16-bit form if the length fits (non-minimal; framing is still followed).
    Force16,
    /// Force the 64-bit form.
    Force64,
}

#[derive(Clone, Debug)]
struct GenFrame {
    fin: bool,
    rsv1: bool,
    op: u8,
    mask: Option<[u8; 4]>,
    enc: LenEnc,
    /// For close frames: the status code, if the frame carries one.
    close_code: Option<u16>,
    /// Payload length (for close frames: including the 2 code bytes).
    len: usize,
    /// Seed of the payload bytes.
    seed: u64,
}

/// Where a frame lies in the encoded stream.
#[derive(Clone, Copy, Debug)]
struct Placed {
    start: usize,
    header_len: usize,
    len: usize,
}

fn payload_bytes(f: &GenFrame) -> Vec<u8> {
    let mut x = f.seed | 1;
    let mut p: Vec<u8> = (0..f.len)
        .map(|_| {
            // xorshift64: varied bytes so a parser that reads payload as headers is caught.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    if let Some(code) = f.close_code {
        p[..2].copy_from_slice(&code.to_be_bytes());
    }
    p
}

fn encode(frames: &[GenFrame]) -> (Vec<u8>, Vec<Placed>) {
    let mut out = Vec::new();
    let mut placed = Vec::new();
    for f in frames {
        let start = out.len();
        let b0 = (if f.fin { 0x80 } else { 0 }) | (if f.rsv1 { 0x40 } else { 0 }) | f.op;
        out.push(b0);
        let m = if f.mask.is_some() { 0x80 } else { 0 };
        let n = f.len;
        let enc = match f.enc {
            LenEnc::Force16 if n <= 0xffff => 16,
            LenEnc::Force64 => 64,
            _ if n < 126 => 7,
            _ if n <= 0xffff => 16,
            _ => 64,
        };
        match enc {
            7 => out.push(m | n as u8),
            16 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut p = payload_bytes(f);
        if let Some(k) = f.mask {
            out.extend_from_slice(&k);
            for (i, b) in p.iter_mut().enumerate() {
                *b ^= k[i % 4];
            }
        }
        let header_len = out.len() - start;
        out.extend_from_slice(&p);
        placed.push(Placed { start, header_len, len: n });
    }
    (out, placed)
}

/// Counts, close codes and headers computed from the model, not from bytes.
fn truth(frames: &[GenFrame]) -> Rec {
    let mut r = Rec::default();
    let (_, placed) = encode(frames);
    for (f, p) in frames.iter().zip(&placed) {
        let s = match f.op {
            opcode::TEXT => slot::TEXT,
            opcode::BINARY => slot::BINARY,
            opcode::CONTINUATION => slot::CONTINUATION,
            opcode::PING => slot::PING,
            opcode::PONG => slot::PONG,
            opcode::CLOSE => slot::CLOSE,
            _ => unreachable!(),
        };
        r.c.frames[s] += 1;
        if f.fin && f.op <= opcode::BINARY {
            r.c.messages += 1;
        }
        r.c.payload_bytes += f.len as u64;
        if f.op == opcode::CLOSE {
            r.codes.push(f.close_code.unwrap_or(NO_STATUS));
        }
        r.headers.push((f.fin, f.rsv1, f.op, f.mask.is_some(), f.len as u64, p.header_len as u8, f.mask.unwrap_or([0; 4])));
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Strategies

fn data_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..130,
        2 => prop::sample::select(vec![0usize, 1, 2, 124, 125, 126, 127, 128, 65535, 65536, 65537]),
        1 => 130usize..2000,
        1 => 60000usize..70000,
    ]
}

fn control_len() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0usize..=125, 1 => prop::sample::select(vec![0usize, 1, 124, 125])]
}

fn len_enc() -> impl Strategy<Value = LenEnc> {
    prop_oneof![6 => Just(LenEnc::Minimal), 1 => Just(LenEnc::Force16), 1 => Just(LenEnc::Force64)]
}

fn mask() -> impl Strategy<Value = Option<[u8; 4]>> {
    prop_oneof![Just(None), any::<[u8; 4]>().prop_map(Some), Just(Some([0, 0, 0, 0]))]
}

fn close_code() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => 1000u16..=1015,
        1 => 3000u16..5000,
        1 => any::<u16>(),
    ]
}

fn control_frame() -> impl Strategy<Value = GenFrame> {
    let ping_pong = (prop::sample::select(vec![opcode::PING, opcode::PONG]), control_len(), mask(), any::<u64>()).prop_map(
        |(op, len, mask, seed)| GenFrame { fin: true, rsv1: false, op, mask, enc: LenEnc::Minimal, close_code: None, len, seed },
    );
    let close = (prop::option::of((close_code(), 0usize..=123)), mask(), any::<u64>()).prop_map(|(code, mask, seed)| GenFrame {
        fin: true,
        rsv1: false,
        op: opcode::CLOSE,
        mask,
        enc: LenEnc::Minimal,
        close_code: code.map(|(c, _)| c),
        len: code.map_or(0, |(_, reason)| 2 + reason),
        seed,
    });
    prop_oneof![2 => ping_pong, 1 => close]
}

/// One data message: first frame TEXT/BINARY, then continuations, control frames interleaved.
fn data_message(rsv1_ok: bool) -> impl Strategy<Value = Vec<GenFrame>> {
    (
        prop::sample::select(vec![opcode::TEXT, opcode::BINARY]),
        prop::collection::vec((data_len(), len_enc(), mask(), any::<u64>(), prop::collection::vec(control_frame(), 0..2)), 1..5),
        any::<bool>(),
    )
        .prop_map(move |(op, frags, rsv1)| {
            let n = frags.len();
            let mut out = Vec::new();
            for (i, (len, enc, mask, seed, controls)) in frags.into_iter().enumerate() {
                out.push(GenFrame {
                    fin: i + 1 == n,
                    // permessage-deflate sets RSV1 on the first frame of a compressed message.
                    rsv1: rsv1_ok && rsv1 && i == 0,
                    op: if i == 0 { op } else { opcode::CONTINUATION },
                    mask,
                    enc,
                    close_code: None,
                    len,
                    seed,
                });
                if i + 1 < n {
                    out.extend(controls); // control frames may sit between fragments
                }
            }
            out
        })
}

fn stream(rsv1_ok: bool) -> impl Strategy<Value = Vec<GenFrame>> {
    prop::collection::vec(prop_oneof![3 => data_message(rsv1_ok), 1 => control_frame().prop_map(|f| vec![f])], 0..8)
        .prop_map(|m| m.into_iter().flatten().collect())
}

/// A stream with its deflate flag, and cut points: random ones plus ones aimed inside headers
/// and close codes.
fn cut_stream() -> impl Strategy<Value = (bool, Vec<GenFrame>, Vec<Index>, Vec<(Index, u8)>)> {
    any::<bool>().prop_flat_map(|rsv1_ok| {
        (
            Just(rsv1_ok),
            stream(rsv1_ok),
            prop::collection::vec(any::<Index>(), 0..24),
            prop::collection::vec((any::<Index>(), any::<u8>()), 0..24),
        )
    })
}

fn make_cuts(data_len: usize, placed: &[Placed], random: &[Index], aimed: &[(Index, u8)]) -> Vec<usize> {
    let mut cuts: Vec<usize> = Vec::new();
    if data_len > 1 {
        cuts.extend(random.iter().map(|i| i.index(data_len)));
    }
    if !placed.is_empty() {
        for (i, d) in aimed {
            let p = placed[i.index(placed.len())];
            // Inside the header, or within the first payload bytes (close codes live there).
            let span = p.header_len + p.len.min(3);
            cuts.push(p.start + 1 + (*d as usize % span.max(1)));
        }
    }
    cuts.retain(|&c| c > 0 && c < data_len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Payload bytes within the first `k` bytes of the stream, from where each frame lies.
fn payload_seen(placed: &[Placed], k: usize) -> u64 {
    placed
        .iter()
        .map(|p| {
            let body = p.start + p.header_len;
            (k.clamp(body, body + p.len) - body) as u64
        })
        .sum()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, max_shrink_iters: 2048, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// Properties over valid streams

proptest! {
    #![proptest_config(config(512))]

    /// Whole stream == truth, and any cutting == whole stream.
    #[test]
    fn valid_stream_split_anywhere_counts_exactly((rsv1_ok, frames, random, aimed) in cut_stream()) {
        let (data, placed) = encode(&frames);
        let want = truth(&frames);

        let (whole, st_whole, res) = feed_whole(&data, rsv1_ok);
        prop_assert_eq!(res, Ok(()));
        prop_assert_eq!(&whole, &want);
        prop_assert!(st_whole.at_boundary());

        let cuts = make_cuts(data.len(), &placed, &random, &aimed);
        let (split, st_split, res) = feed_cut(&data, &cuts, rsv1_ok);
        prop_assert_eq!(res, Ok(()));
        prop_assert_eq!(&split, &want, "cuts {:?}", cuts);
        prop_assert!(st_split.at_boundary());
    }

    /// The probe's way of driving the parser (own skip sizes, short windows, junk after the
    /// window) gives the truth too.
    #[test]
    fn kernel_style_driver_counts_exactly(
        (rsv1_ok, frames, _r, _a) in cut_stream(),
        steps in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        let (data, _) = encode(&frames);
        let (got, st, res) = feed_kernel_like(&data, &steps, rsv1_ok);
        prop_assert_eq!(res, Ok(()));
        prop_assert_eq!(&got, &truth(&frames));
        prop_assert!(st.at_boundary());
    }

    /// Every prefix of a valid stream is a valid state: the observable state after feeding a
    /// prefix whole equals that after feeding it cut, and finishing the stream gives the truth.
    #[test]
    fn prefix_then_rest_equals_whole(
        (rsv1_ok, frames, random, aimed) in cut_stream(),
        at in any::<Index>(),
        steps in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        let (data, placed) = encode(&frames);
        prop_assume!(!data.is_empty());
        let k = at.index(data.len() + 1);
        let (a, st_a, ra) = feed_whole(&data[..k], rsv1_ok);
        let cuts: Vec<usize> = make_cuts(data.len(), &placed, &random, &aimed).into_iter().filter(|&c| c < k).collect();
        let (b, st_b, rb) = feed_cut(&data[..k], &cuts, rsv1_ok);
        prop_assert_eq!(ra, Ok(()));
        prop_assert_eq!(rb, Ok(()));
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(observable(&st_a), observable(&st_b));
        // Mid-frame, the payload bytes are those seen so far, not the declared lengths.
        prop_assert_eq!(a.c.payload_bytes, payload_seen(&placed, k));
        let (kern, _, rk) = feed_kernel_like(&data[..k], &steps, rsv1_ok);
        prop_assert_eq!(rk, Ok(()));
        prop_assert_eq!(&kern, &a);
        let mut st = st_a;
        let mut r = a;
        prop_assert_eq!(st.feed(&data[k..], &mut r), Ok(()));
        prop_assert_eq!(&r, &truth(&frames));
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// One byte at a time, on streams without the 64 KiB payloads.
    #[test]
    fn one_byte_chunks((rsv1_ok, frames, _r, _a) in cut_stream()) {
        let (data, _) = encode(&frames);
        prop_assume!(data.len() <= 40_000);
        let cuts: Vec<usize> = (1..data.len()).collect();
        let (got, st, res) = feed_cut(&data, &cuts, rsv1_ok);
        prop_assert_eq!(res, Ok(()));
        prop_assert_eq!(&got, &truth(&frames));
        prop_assert!(st.at_boundary());
    }
}

// ---------------------------------------------------------------------------------------------
// Reference parser: plain, non-streaming, written from RFC 6455 and the parser's documented
// checks. Returns what a streaming parser must report for the whole buffer.

fn reference(data: &[u8], rsv1_ok: bool) -> (Rec, Result<(), Desync>) {
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
        let l7 = b1 & 0x7f;
        let ext = match l7 {
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
            _ => l7 as u64,
        };
        let rsv1 = b0 & 0x40 != 0;
        if rsv1 && (!rsv1_ok || control) {
            return (r, Err(Desync::BadRsv));
        }
        let mut mask = [0u8; 4];
        if masked {
            mask.copy_from_slice(&rest[2 + ext..hlen]);
        }
        let h = FrameHeader { fin, rsv1, opcode: op, masked, payload_len: len, header_len: hlen as u8, mask };
        r.frame(&h);
        let payload = &rest[hlen..];
        if op == opcode::CLOSE {
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

#[test]
fn reference_agrees_with_truth_on_a_fixed_stream() {
    let frames = vec![
        GenFrame {
            fin: false,
            rsv1: true,
            op: opcode::TEXT,
            mask: Some([1, 2, 3, 4]),
            enc: LenEnc::Minimal,
            close_code: None,
            len: 126,
            seed: 7,
        },
        GenFrame {
            fin: true,
            rsv1: false,
            op: opcode::PING,
            mask: None,
            enc: LenEnc::Minimal,
            close_code: None,
            len: 125,
            seed: 8,
        },
        GenFrame {
            fin: true,
            rsv1: false,
            op: opcode::CONTINUATION,
            mask: None,
            enc: LenEnc::Force64,
            close_code: None,
            len: 3,
            seed: 9,
        },
        GenFrame {
            fin: true,
            rsv1: false,
            op: opcode::CLOSE,
            mask: Some([9, 8, 7, 6]),
            enc: LenEnc::Minimal,
            close_code: Some(4001),
            len: 5,
            seed: 10,
        },
    ];
    let (data, _) = encode(&frames);
    let (r, res) = reference(&data, true);
    assert_eq!(res, Ok(()));
    assert_eq!(r, truth(&frames));
    assert_eq!(r.codes, vec![4001]);
    assert_eq!(r.c.messages, 1);
}

/// Bytes that are mostly headers: random first bytes with small or boundary lengths, so that
/// random input walks through several frames instead of one huge declared payload.
fn headerish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            // a plausible header start + a few payload bytes
            (
                any::<u8>(),
                prop::sample::select(vec![0u8, 1, 2, 3, 125, 126, 127, 0x80, 0x81, 0x82, 0xfd, 0xfe, 0xff]),
                prop::collection::vec(any::<u8>(), 0..12)
            )
                .prop_map(|(b0, b1, mut tail)| {
                    let mut v = vec![b0, b1];
                    v.append(&mut tail);
                    v
                }),
            prop::collection::vec(any::<u8>(), 0..8),
        ],
        0..24,
    )
    .prop_map(|v| v.into_iter().flatten().collect())
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..256), headerish_bytes()]
}

proptest! {
    #![proptest_config(config(2048))]

    /// Random bytes: no panic; whole, cut and kernel-style feeding all agree with the reference
    /// parser on the outcome (Err with the same reason, or Ok) and on what was counted before it.
    #[test]
    fn random_bytes_never_panic_and_errors_are_reported(
        rsv1_ok in any::<bool>(),
        data in any_bytes(),
        random in prop::collection::vec(any::<Index>(), 0..16),
        steps in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let (want, want_res) = reference(&data, rsv1_ok);
        let (whole, _, res_whole) = feed_whole(&data, rsv1_ok);
        prop_assert_eq!(res_whole, want_res);
        prop_assert_eq!(&whole, &want);

        let cuts = make_cuts(data.len(), &[], &random, &[]);
        let (split, _, res_split) = feed_cut(&data, &cuts, rsv1_ok);
        prop_assert_eq!(res_split, want_res);
        prop_assert_eq!(&split, &want);

        let (k, _, res_k) = feed_kernel_like(&data, &steps, rsv1_ok);
        prop_assert_eq!(res_k, want_res);
        prop_assert_eq!(&k, &want);
    }

    /// A valid stream followed by garbage: everything before the garbage is counted exactly,
    /// and a framing error in the garbage is returned as `Err`, however the stream is cut.
    #[test]
    fn valid_prefix_then_garbage(
        (rsv1_ok, frames, random, _a) in cut_stream(),
        garbage in any_bytes(),
    ) {
        let (mut data, _) = encode(&frames);
        data.extend_from_slice(&garbage);
        let (want, want_res) = reference(&data, rsv1_ok);
        let (whole, _, res) = feed_whole(&data, rsv1_ok);
        prop_assert_eq!(res, want_res);
        prop_assert_eq!(&whole, &want);
        let cuts = make_cuts(data.len(), &[], &random, &[]);
        let (split, _, res) = feed_cut(&data, &cuts, rsv1_ok);
        prop_assert_eq!(res, want_res);
        prop_assert_eq!(&split, &want);
        // The valid part is always counted in full.
        let t = truth(&frames);
        prop_assert!(want.headers.len() >= t.headers.len());
        prop_assert_eq!(&want.headers[..t.headers.len()], &t.headers[..]);
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed cases

#[test]
fn desync_is_sticky_for_a_caller_that_checks_err() {
    // A reserved opcode after a valid frame: feed returns Err, and the frame before it counted.
    let mut st = FrameState::new(false);
    let mut r = Rec::default();
    assert_eq!(st.feed(&[0x81, 0x01, b'a', 0x83, 0x00], &mut r), Err(Desync::ReservedOpcode));
    assert_eq!(r.c.frames[slot::TEXT], 1);
    // The same bytes fed one at a time report it at the byte that completes the bad header.
    let mut st = FrameState::new(false);
    let mut r = Rec::default();
    let data = [0x81, 0x01, b'a', 0x83, 0x00];
    let errs: Vec<_> = data.iter().map(|b| st.feed(std::slice::from_ref(b), &mut r)).collect();
    assert_eq!(errs, vec![Ok(()), Ok(()), Ok(()), Ok(()), Err(Desync::ReservedOpcode)]);
}

#[test]
fn every_cut_of_a_boundary_stream() {
    // 125/126/65535/65536 boundaries, masked close with code, all cut at every single point
    // around the headers (two cuts at a time for the short prefix).
    let frames = vec![
        GenFrame {
            fin: true,
            rsv1: false,
            op: opcode::TEXT,
            mask: Some([0xde, 0xad, 0xbe, 0xef]),
            enc: LenEnc::Minimal,
            close_code: None,
            len: 125,
            seed: 1,
        },
        GenFrame {
            fin: false,
            rsv1: false,
            op: opcode::BINARY,
            mask: None,
            enc: LenEnc::Minimal,
            close_code: None,
            len: 126,
            seed: 2,
        },
        GenFrame {
            fin: true,
            rsv1: false,
            op: opcode::CLOSE,
            mask: Some([0x55, 0xaa, 0x0f, 0xf0]),
            enc: LenEnc::Minimal,
            close_code: Some(1001),
            len: 2,
            seed: 3,
        },
        GenFrame {
            fin: false,
            rsv1: false,
            op: opcode::CONTINUATION,
            mask: Some([1, 1, 1, 1]),
            enc: LenEnc::Minimal,
            close_code: None,
            len: 65535,
            seed: 4,
        },
        GenFrame {
            fin: true,
            rsv1: false,
            op: opcode::CONTINUATION,
            mask: None,
            enc: LenEnc::Minimal,
            close_code: None,
            len: 65536,
            seed: 5,
        },
        GenFrame {
            fin: true,
            rsv1: false,
            op: opcode::CLOSE,
            mask: None,
            enc: LenEnc::Minimal,
            close_code: None,
            len: 0,
            seed: 6,
        },
    ];
    let (data, placed) = encode(&frames);
    let want = truth(&frames);
    assert_eq!(want.codes, vec![1001, NO_STATUS]);
    assert_eq!(want.c.messages, 2);
    let (w, _, res) = feed_whole(&data, false);
    assert_eq!((res, &w), (Ok(()), &want));
    let mut points: Vec<usize> = Vec::new();
    for p in &placed {
        points.extend(p.start..(p.start + p.header_len + p.len.min(4)).min(data.len()));
    }
    for &a in &points {
        let (got, _, res) = feed_cut(&data, &[a].into_iter().filter(|&c| c > 0).collect::<Vec<_>>(), false);
        assert_eq!((res, &got), (Ok(()), &want), "cut at {a}");
        for &b in points.iter().filter(|&&b| b > a && b < 300) {
            let cuts: Vec<usize> = [a, b].into_iter().filter(|&c| c > 0).collect();
            let (got, _, res) = feed_cut(&data, &cuts, false);
            assert_eq!((res, &got), (Ok(()), &want), "cuts at {a},{b}");
        }
    }
}
