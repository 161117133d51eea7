//! The frame parser against an independent implementation: frames are encoded by `tungstenite`
//! (0.26), both one by one (`Frame::format`) and by two `tungstenite::WebSocket`s (a client and a
//! server) talking over in-memory streams, so the bytes are exactly what a real Rust peer sends:
//! random client masks, pongs answered automatically, a close handshake with a code.
//! The expected counts come from the tungstenite `Frame` values, or from walking the captured
//! bytes with tungstenite's own header parser (`FrameHeader::parse`).

use std::collections::VecDeque;
use std::io::{self, Cursor, Read, Write};

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader as TFrameHeader};
use tungstenite::protocol::{Role, WebSocket};
use tungstenite::{Bytes, Message};
use wsguard_common::frame::{slot, DirCounters, FrameHeader, FrameState, Sink, NO_STATUS};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rec {
    c: DirCounters,
    codes: Vec<u16>,
}

impl Sink for Rec {
    fn frame(&mut self, h: &FrameHeader) {
        self.c.record(h);
    }
    fn close_code(&mut self, code: u16) {
        self.codes.push(code);
    }
    fn payload(&mut self, n: u64) {
        self.c.payload(n);
    }
}

fn slot_of(op: OpCode) -> usize {
    match op {
        OpCode::Data(Data::Text) => slot::TEXT,
        OpCode::Data(Data::Binary) => slot::BINARY,
        OpCode::Data(Data::Continue) => slot::CONTINUATION,
        OpCode::Control(Control::Ping) => slot::PING,
        OpCode::Control(Control::Pong) => slot::PONG,
        OpCode::Control(Control::Close) => slot::CLOSE,
        other => panic!("reserved opcode {other:?} in a test stream"),
    }
}

/// What a frame should add to the counters, from tungstenite's view of it.
fn expect_frame(r: &mut Rec, hdr: &TFrameHeader, len: u64, unmasked_payload_start: &[u8]) {
    r.c.frames[slot_of(hdr.opcode)] += 1;
    if hdr.is_final && matches!(hdr.opcode, OpCode::Data(_)) {
        r.c.messages += 1;
    }
    r.c.payload_bytes += len;
    if hdr.opcode == OpCode::Control(Control::Close) {
        r.codes.push(if len >= 2 {
            u16::from_be_bytes([unmasked_payload_start[0], unmasked_payload_start[1]])
        } else {
            NO_STATUS
        });
    }
}

/// Expected counts of a list of tungstenite frames (before encoding).
fn expect_frames(frames: &[Frame]) -> Rec {
    let mut r = Rec::default();
    for f in frames {
        expect_frame(&mut r, f.header(), f.payload().len() as u64, f.payload());
    }
    r
}

/// Expected counts of a byte stream, walking it with tungstenite's header parser.
fn expect_bytes(data: &[u8]) -> Rec {
    let mut r = Rec::default();
    let mut cur = Cursor::new(data);
    loop {
        let start = cur.position() as usize;
        if start == data.len() {
            return r;
        }
        let (hdr, len) =
            TFrameHeader::parse(&mut cur).expect("tungstenite rejects the stream").expect("truncated frame in a captured stream");
        let p = cur.position() as usize;
        let mut first = [0u8; 2];
        for (i, b) in first.iter_mut().enumerate() {
            if (i as u64) < len {
                *b = data[p + i] ^ hdr.mask.map_or(0, |m| m[i]);
            }
        }
        expect_frame(&mut r, &hdr, len, &first);
        cur.set_position((p as u64) + len);
    }
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.clone().format(&mut out).unwrap();
    }
    out
}

fn feed_whole(data: &[u8], rsv1_ok: bool) -> Rec {
    let mut st = FrameState::new(rsv1_ok);
    let mut r = Rec::default();
    st.feed(data, &mut r).expect("desync on a valid stream");
    assert!(st.at_boundary());
    r
}

fn feed_cuts(data: &[u8], cuts: &[usize], rsv1_ok: bool) -> Rec {
    let mut st = FrameState::new(rsv1_ok);
    let mut r = Rec::default();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        st.feed(&data[start..end], &mut r).unwrap_or_else(|e| panic!("desync {e:?} with cuts {cuts:?}"));
        start = end;
    }
    assert!(st.at_boundary());
    r
}

fn masked(mut f: Frame, mask: [u8; 4]) -> Frame {
    f.header_mut().mask = Some(mask);
    f
}

fn close(code: CloseCode, reason: &str) -> Frame {
    Frame::close(Some(CloseFrame { code, reason: reason.into() }))
}

fn text(s: &str, fin: bool) -> Frame {
    Frame::message(Bytes::copy_from_slice(s.as_bytes()), OpCode::Data(Data::Text), fin)
}

fn binary(n: usize, fin: bool) -> Frame {
    let v: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
    Frame::message(v, OpCode::Data(Data::Binary), fin)
}

fn cont(n: usize, fin: bool) -> Frame {
    Frame::message(vec![0x81u8; n], OpCode::Data(Data::Continue), fin)
}

/// A small stream with every opcode, masks, fragmentation and close codes.
fn small_frames() -> Vec<Frame> {
    vec![
        text("hello", true),
        masked(text("masked hello", true), [0x37, 0xfa, 0x21, 0x3d]),
        masked(text("frag-1 ", false), [1, 2, 3, 4]),
        masked(Frame::ping(Bytes::from_static(b"are you there")), [9, 9, 9, 9]),
        masked(cont(3, false), [0xff, 0, 0xff, 0]),
        Frame::pong(Bytes::from_static(b"")),
        masked(cont(0, true), [5, 6, 7, 8]),
        binary(0, true),
        masked(binary(20, true), [0xaa, 0x55, 0xaa, 0x55]),
        Frame::ping(Bytes::new()),
        masked(close(CloseCode::Away, "going"), [0x12, 0x34, 0x56, 0x78]),
        close(CloseCode::Normal, ""),
        masked(Frame::close(None), [1, 1, 1, 1]),
        Frame::close(None),
        masked(close(CloseCode::Library(4321), "app"), [0x80, 0x7f, 0x01, 0xfe]),
    ]
}

#[test]
fn tungstenite_frames_counted_exactly_whole_and_at_every_cut() {
    let frames = small_frames();
    let data = encode(&frames);
    let want = expect_frames(&frames);
    assert_eq!(want, expect_bytes(&data), "the two oracles disagree");
    assert_eq!(want.codes, vec![1001, 1000, NO_STATUS, NO_STATUS, 4321]);
    assert_eq!(want.c.frames, [3, 2, 2, 2, 1, 5]);
    assert_eq!(want.c.messages, 5);

    assert_eq!(feed_whole(&data, false), want);
    // One cut at every byte boundary.
    for cut in 1..data.len() {
        assert_eq!(feed_cuts(&data, &[cut], false), want, "cut at {cut}");
    }
    // Every pair of cuts (the stream is small).
    assert!(data.len() < 200, "stream grew to {} bytes", data.len());
    for a in 1..data.len() {
        for b in a + 1..data.len() {
            assert_eq!(feed_cuts(&data, &[a, b], false), want, "cuts at {a},{b}");
        }
    }
    // Byte by byte.
    let all: Vec<usize> = (1..data.len()).collect();
    assert_eq!(feed_cuts(&data, &all, false), want);
}

#[test]
fn tungstenite_length_encodings_and_boundaries() {
    // tungstenite picks 7-bit below 126, 16-bit below 65536, else 64-bit.
    let mut frames = Vec::new();
    for n in [0usize, 1, 124, 125, 126, 127, 65535, 65536, 65537, 100_000] {
        frames.push(binary(n, true));
        frames.push(masked(binary(n, false), [n as u8, 0x5a, 0xa5, 0xff]));
        frames.push(cont(n, true));
    }
    frames.push(masked(Frame::ping(vec![0u8; 125]), [1, 2, 3, 4]));
    frames.push(Frame::pong(vec![0u8; 125]));
    frames.push(masked(close(CloseCode::Size, &"x".repeat(123)), [7, 7, 7, 7]));
    let data = encode(&frames);
    let want = expect_frames(&frames);
    assert_eq!(want, expect_bytes(&data));
    assert_eq!(feed_whole(&data, false), want);

    // Cut at every byte within ±16 of every header and of the close code.
    let mut pos = 0usize;
    let mut points = Vec::new();
    for f in &frames {
        for d in 0..=16usize {
            points.push(pos + d);
            points.push(pos.saturating_sub(d));
        }
        pos += f.len();
    }
    points.retain(|&p| p > 0 && p < data.len());
    points.sort_unstable();
    points.dedup();
    for &p in &points {
        assert_eq!(feed_cuts(&data, &[p], false), want, "cut at {p}");
    }
    assert_eq!(feed_cuts(&data, &points, false), want, "all points at once");
}

#[test]
fn tungstenite_rsv1_frames_need_deflate() {
    // Compressed (RSV1) data frames as permessage-deflate sends them; the payload is opaque.
    let mut frames = vec![text("\u{1}compressed?", true), masked(binary(300, false), [3, 1, 4, 1]), cont(70000, true)];
    frames[0].header_mut().rsv1 = true;
    frames[1].header_mut().rsv1 = true;
    frames.push(masked(close(CloseCode::Normal, "done"), [2, 7, 1, 8]));
    let data = encode(&frames);
    let want = expect_frames(&frames);
    assert_eq!(feed_whole(&data, true), want);
    for cut in (1..40).chain(data.len() - 40..data.len()) {
        assert_eq!(feed_cuts(&data, &[cut], true), want, "cut at {cut}");
    }
    // Without a negotiated extension, RSV1 is a framing error at the very first header.
    let mut st = FrameState::new(false);
    let mut r = Rec::default();
    assert!(st.feed(&data, &mut r).is_err());
    assert_eq!(r.c.total_frames(), 0);
}

#[test]
fn tungstenite_frames_with_random_masks() {
    // Masks as the client generates them (random), many close codes.
    let codes = [
        CloseCode::Normal,
        CloseCode::Away,
        CloseCode::Protocol,
        CloseCode::Unsupported,
        CloseCode::Invalid,
        CloseCode::Policy,
        CloseCode::Size,
        CloseCode::Extension,
        CloseCode::Error,
        CloseCode::Restart,
        CloseCode::Again,
        CloseCode::Iana(3000),
        CloseCode::Library(4999),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed.to_le_bytes()[..4].try_into().unwrap()
    };
    let mut frames = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        frames.push(masked(text(&"t".repeat(i * 11), true), next()));
        frames.push(masked(close(*code, &"r".repeat(i)), next()));
    }
    let data = encode(&frames);
    let want = expect_frames(&frames);
    let got_codes: Vec<u16> = codes.iter().map(|c| u16::from(*c)).collect();
    assert_eq!(want.codes, got_codes);
    assert_eq!(feed_whole(&data, false), want);
    let all: Vec<usize> = (1..data.len()).collect();
    assert_eq!(feed_cuts(&data, &all, false), want);
}

// ---------------------------------------------------------------------------------------------
// Two real tungstenite WebSockets over in-memory streams.

/// One end of a connection: reads what the peer wrote, records everything it writes.
#[derive(Default)]
struct MemStream {
    rx: VecDeque<u8>,
    tx: Vec<u8>,
}

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rx.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.rx.len());
        for (i, b) in self.rx.drain(..n).enumerate() {
            buf[i] = b;
        }
        Ok(n)
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Conn {
    client: WebSocket<MemStream>,
    server: WebSocket<MemStream>,
    /// Everything each side wrote, in order (what the probe sees on the wire).
    c2s: Vec<u8>,
    s2c: Vec<u8>,
}

fn is_would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

impl Conn {
    fn new() -> Self {
        Conn {
            client: WebSocket::from_raw_socket(MemStream::default(), Role::Client, None),
            server: WebSocket::from_raw_socket(MemStream::default(), Role::Server, None),
            c2s: Vec::new(),
            s2c: Vec::new(),
        }
    }

    /// Move written bytes across and let both sides read (answering pings and closes) until
    /// nothing moves. Returns the messages each side received.
    fn pump(&mut self) -> (Vec<Message>, Vec<Message>) {
        let (mut at_client, mut at_server) = (Vec::new(), Vec::new());
        loop {
            let _ = self.client.flush();
            let _ = self.server.flush();
            let c = std::mem::take(&mut self.client.get_mut().tx);
            let s = std::mem::take(&mut self.server.get_mut().tx);
            if c.is_empty() && s.is_empty() {
                return (at_client, at_server);
            }
            self.c2s.extend_from_slice(&c);
            self.s2c.extend_from_slice(&s);
            self.server.get_mut().rx.extend(c);
            self.client.get_mut().rx.extend(s);
            read_all(&mut self.server, &mut at_server);
            read_all(&mut self.client, &mut at_client);
        }
    }
}

fn read_all(ws: &mut WebSocket<MemStream>, into: &mut Vec<Message>) {
    loop {
        match ws.read() {
            Ok(m) => into.push(m),
            Err(e) if is_would_block(&e) => return,
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => return,
            Err(e) => panic!("tungstenite read error: {e}"),
        }
    }
}

#[test]
fn tungstenite_websocket_conversation_counted_exactly() {
    let mut conn = Conn::new();

    // Client → server: messages, pings (the server answers with pongs), a fragmented message.
    conn.client.send(Message::text("hello server")).unwrap();
    conn.client.send(Message::binary(vec![1u8; 126])).unwrap();
    conn.client.send(Message::Ping(Bytes::from_static(b"ping-1"))).unwrap();
    conn.client.send(Message::Frame(Frame::message(Bytes::from_static(b"part one, "), OpCode::Data(Data::Text), false))).unwrap();
    conn.client.send(Message::Ping(Bytes::new())).unwrap();
    conn.client
        .send(Message::Frame(Frame::message(Bytes::from_static(b"part two, "), OpCode::Data(Data::Continue), false)))
        .unwrap();
    conn.client.send(Message::Frame(Frame::message(Bytes::from_static(b"end"), OpCode::Data(Data::Continue), true))).unwrap();
    let (_, at_server) = conn.pump();
    assert_eq!(at_server.iter().filter(|m| matches!(m, Message::Text(t) if t.as_str() == "part one, part two, end")).count(), 1);

    // Server → client: a big binary (64-bit length), a 16-bit one, a ping the client answers.
    conn.server.send(Message::binary(vec![7u8; 70_000])).unwrap();
    conn.server.send(Message::binary(vec![8u8; 65_535])).unwrap();
    conn.server.send(Message::text("x".repeat(125))).unwrap();
    conn.server.send(Message::Ping(Bytes::from_static(b"srv"))).unwrap();
    conn.pump();

    // The client closes with a code; the server echoes it.
    conn.client.close(Some(CloseFrame { code: CloseCode::Library(4000), reason: "bye".into() })).unwrap();
    let (at_client, at_server) = conn.pump();
    assert!(at_server.iter().any(|m| matches!(m, Message::Close(Some(f)) if f.code == CloseCode::Library(4000))));
    assert!(at_client.iter().any(|m| matches!(m, Message::Close(_))));

    let (c2s, s2c) = (conn.c2s.clone(), conn.s2c.clone());
    let want_c2s = expect_bytes(&c2s);
    let want_s2c = expect_bytes(&s2c);

    // Hand-checked totals for the script above.
    assert_eq!(want_c2s.c.frames, [2, 1, 2, 2, 1, 1], "client frames");
    assert_eq!(want_c2s.c.messages, 3);
    assert_eq!(want_c2s.codes, vec![4000]);
    assert_eq!(want_s2c.c.frames, [1, 2, 0, 1, 2, 1], "server frames");
    assert_eq!(want_s2c.c.messages, 3);
    assert_eq!(want_s2c.codes, vec![4000]);

    for (data, want) in [(&c2s, &want_c2s), (&s2c, &want_s2c)] {
        assert_eq!(&feed_whole(data, false), want);
        // A cut at every byte of the small stream; cuts every 97 bytes plus around every header
        // for the big one.
        if data.len() < 1000 {
            for cut in 1..data.len() {
                assert_eq!(&feed_cuts(data, &[cut], false), want, "cut at {cut}");
            }
            let all: Vec<usize> = (1..data.len()).collect();
            assert_eq!(&feed_cuts(data, &all, false), want);
        } else {
            let cuts: Vec<usize> = (1..data.len()).step_by(97).collect();
            assert_eq!(&feed_cuts(data, &cuts, false), want);
            let cuts: Vec<usize> = (1..data.len()).filter(|i| i % 65_536 < 20 || i % 1000 == 999).collect();
            assert_eq!(&feed_cuts(data, &cuts, false), want);
        }
    }
}
