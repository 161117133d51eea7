//! Server-Sent Events, scanned from the bytes a server writes: the second transport beside
//! WebSocket (issue #20). Three streaming scanners, each fed a byte (or a 16-byte window) at a
//! time with state that survives any split between writes:
//!
//! * [`SseHead`]: a request head (notes `Last-Event-ID:`, a client resuming) or the response
//!   head of a plain request (status `200`, `Content-Type: text/event-stream`,
//!   `Transfer-Encoding: chunked`, `Content-Encoding` other than `identity`).
//! * [`SseBody`]: the response body: HTTP/1.1 chunked de-framing (hex size, `;ext`, CRLF, the
//!   zero chunk and trailers end the stream), then the event-stream parser of the HTML
//!   standard: lines end in LF, CR or CRLF; a line starting with `:` is a comment; a `data`
//!   field marks the block; a blank line ends the block, an event iff it had a `data` field; a
//!   leading UTF-8 BOM is skipped.
//!
//! Counting happens in the probe (exact, in pinned maps), so everything here is `no_std`,
//! `#[repr(C)]` in 8-byte groups, indexes with masks and never panics.

use crate::frame::WINDOW;
use crate::http::{status_line_byte, Scan, MAX_HEAD};

const NAME_LEN: usize = 32;
const NMASK: usize = NAME_LEN - 1;

const fn pad(s: &[u8]) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    let mut i = 0;
    while i < s.len() {
        out[i] = s[i];
        i += 1;
    }
    out
}

/// Header names (lowercase, with the colon) the response head looks for, by index.
const CONTENT_TYPE: usize = 0;
const TRANSFER_ENCODING: usize = 1;
const CONTENT_ENCODING: usize = 2;
const RESPONSE_NAMES: [[u8; NAME_LEN]; 3] = [pad(b"content-type:"), pad(b"transfer-encoding:"), pad(b"content-encoding:")];
const RESPONSE_LENS: [u8; 3] = [13, 18, 17];
/// The request head's one name.
const LAST_EVENT_ID: [u8; NAME_LEN] = pad(b"last-event-id:");
const LAST_EVENT_ID_LEN: u8 = 14;

const EVENT_STREAM: [u8; NAME_LEN] = pad(b"text/event-stream");
const EVENT_STREAM_LEN: u8 = 17;
const IDENTITY: [u8; NAME_LEN] = pad(b"identity");
const IDENTITY_LEN: u8 = 8;
const CHUNKED: [u8; NAME_LEN] = pad(b"chunked");
const CHUNKED_LEN: u8 = 7;

/// Which head [`SseHead`] scans (a zeroed state scans a request).
pub mod side {
    pub const REQUEST: u8 = 0;
    pub const RESPONSE: u8 = 1;
}

/// What a head carried ([`SseHead::found`]).
pub mod found {
    /// Response: `Content-Type` whose media type is `text/event-stream`.
    pub const EVENT_STREAM: u8 = 1;
    /// Response: `Transfer-Encoding` names `chunked`.
    pub const CHUNKED: u8 = 2;
    /// Response: `Content-Encoding` other than `identity` (events cannot be parsed).
    pub const COMPRESSED: u8 = 4;
    /// Request: a `Last-Event-ID` header (a client resuming a stream).
    pub const LAST_EVENT_ID: u8 = 8;
}

/// Where a header value's match is.
mod value {
    /// Leading whitespace.
    pub const OWS: u8 = 0;
    pub const MATCHING: u8 = 1;
    /// The whole token matched; the next byte decides.
    pub const MATCHED: u8 = 2;
    /// Matched and properly ended (whitespace or, for a media type, parameters follow).
    pub const ACCEPTED: u8 = 3;
    pub const FAILED: u8 = 4;
}

/// Scanner of one HTTP head for what makes (or resumes) an SSE stream. 16 bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SseHead {
    /// Bytes of the head seen so far.
    pub total: u32,
    /// Response status (0 until its three digits were seen).
    pub status: u16,
    /// Non-CR bytes on the current line.
    pub line_len: u16,
    /// Bytes of the header name seen on this line (saturating).
    pub name_m: u8,
    /// Bit i set: name i no longer matches this line.
    pub dead: u8,
    /// Index + 1 of the header whose value this line is in (0: still in the name, or none).
    pub hdr: u8,
    /// [`value`] state of the current header value.
    pub vstate: u8,
    /// Bytes of the value's token matched.
    pub tok_m: u8,
    /// [`found`] bits.
    pub found: u8,
    pub side: u8,
    pub _pad: u8,
}

impl SseHead {
    pub fn new(side: u8) -> Self {
        Self { side, ..Self::default() }
    }

    /// A `200` answer with an event-stream media type: an SSE stream begins.
    pub fn is_stream(&self) -> bool {
        self.status == 200 && self.found & found::EVENT_STREAM != 0
    }

    /// Feed a whole buffer (userspace and tests); returns bytes consumed and the verdict.
    pub fn feed(&mut self, data: &[u8]) -> (usize, Scan) {
        for (i, &b) in data.iter().enumerate() {
            match self.byte(b) {
                Scan::More => {}
                r => return (i + 1, r),
            }
        }
        (data.len(), Scan::More)
    }

    /// Feed one byte.
    #[inline(always)]
    pub fn byte(&mut self, b: u8) -> Scan {
        let at = self.total;
        self.total += 1;
        if at >= MAX_HEAD {
            return Scan::NotHttp;
        }
        if self.side == side::RESPONSE && at < 12 {
            if !status_line_byte(at, b) {
                return Scan::NotHttp;
            }
            if at >= 9 {
                self.status = self.status * 10 + (b - b'0') as u16;
            }
        }
        match b {
            b'\n' => {
                if self.line_len == 0 && at > 0 {
                    return Scan::Done;
                }
                self.end_line();
                Scan::More
            }
            b'\r' => Scan::More,
            _ => {
                self.line_len = self.line_len.saturating_add(1);
                let c = b.to_ascii_lowercase();
                if self.hdr == 0 {
                    self.name(c);
                } else {
                    self.value(c);
                }
                Scan::More
            }
        }
    }

    #[inline(always)]
    fn end_line(&mut self) {
        let ok = self.vstate == value::MATCHED || self.vstate == value::ACCEPTED;
        if self.side == side::RESPONSE {
            let h = self.hdr as usize;
            if h == CONTENT_TYPE + 1 && ok {
                self.found |= found::EVENT_STREAM;
            }
            if h == CONTENT_ENCODING + 1 && self.vstate != value::OWS && !ok {
                self.found |= found::COMPRESSED;
            }
        }
        self.line_len = 0;
        self.name_m = 0;
        self.dead = 0;
        self.hdr = 0;
        self.vstate = value::OWS;
        self.tok_m = 0;
    }

    #[inline(always)]
    fn name(&mut self, c: u8) {
        let m = self.name_m as usize & NMASK;
        if self.side == side::REQUEST {
            if self.dead & 1 == 0 {
                if c == LAST_EVENT_ID[m] {
                    if m + 1 == LAST_EVENT_ID_LEN as usize {
                        self.found |= found::LAST_EVENT_ID;
                        self.hdr = 1;
                    }
                } else {
                    self.dead |= 1;
                }
            }
        } else {
            let mut i = 0;
            while i < 3 {
                if self.dead & (1 << i) == 0 {
                    if c == RESPONSE_NAMES[i][m] {
                        if m + 1 == RESPONSE_LENS[i] as usize {
                            self.hdr = i as u8 + 1;
                        }
                    } else {
                        self.dead |= 1 << i;
                    }
                }
                i += 1;
            }
        }
        if self.name_m < NAME_LEN as u8 {
            self.name_m += 1;
        } else {
            self.dead = 0xff;
        }
    }

    #[inline(always)]
    fn value(&mut self, c: u8) {
        let h = self.hdr as usize;
        if self.side == side::REQUEST {
            return;
        }
        if h == TRANSFER_ENCODING + 1 {
            // A token anywhere in the list.
            let m = self.tok_m as usize & NMASK;
            if c == CHUNKED[m] {
                self.tok_m += 1;
                if self.tok_m >= CHUNKED_LEN {
                    self.found |= found::CHUNKED;
                    self.tok_m = 0;
                }
            } else {
                self.tok_m = (c == CHUNKED[0]) as u8;
            }
            return;
        }
        let media = h == CONTENT_TYPE + 1;
        let ws = c == b' ' || c == b'\t';
        match self.vstate {
            value::OWS | value::MATCHING => {
                if self.vstate == value::OWS {
                    if ws {
                        return;
                    }
                    self.vstate = value::MATCHING;
                }
                let m = self.tok_m as usize & NMASK;
                let (tok, len) = if media { (&EVENT_STREAM, EVENT_STREAM_LEN) } else { (&IDENTITY, IDENTITY_LEN) };
                if c == tok[m] {
                    self.tok_m += 1;
                    if self.tok_m >= len {
                        self.vstate = value::MATCHED;
                    }
                } else {
                    self.vstate = value::FAILED;
                }
            }
            value::MATCHED => {
                self.vstate = if ws || (media && c == b';') { value::ACCEPTED } else { value::FAILED };
            }
            // A media type's parameters may follow; an encoding list may not.
            value::ACCEPTED if !media && !ws => self.vstate = value::FAILED,
            _ => {}
        }
    }
}

/// What one write's body bytes carried, added to the connection and the process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SseDelta {
    pub events: u64,
    pub comments: u64,
    /// Bytes of the event stream (after removing chunked framing).
    pub payload_bytes: u64,
}

/// Result of feeding body bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// All bytes consumed; the stream goes on.
    More,
    /// The chunked terminator (zero chunk, trailers, blank line) ended the stream; the bytes
    /// consumed include it.
    Ended,
    /// Chunked framing that is not HTTP/1.1: the stream cannot be followed further.
    Bad,
}

/// Chunked de-framing states ([`SseBody::cstate`]).
mod chunk {
    /// In the size line's hex digits.
    pub const SIZE: u8 = 0;
    /// After the digits: extensions or whitespace, up to the line's LF.
    pub const EXT: u8 = 1;
    pub const DATA: u8 = 2;
    /// After a chunk's data: its CR or LF.
    pub const DATA_END: u8 = 3;
    /// After that CR: its LF.
    pub const DATA_LF: u8 = 4;
    /// At the start of a trailer line (or the final blank line).
    pub const TRAILER_START: u8 = 5;
    pub const TRAILER: u8 = 6;
    /// The final blank line's LF after its CR.
    pub const TRAILER_LF: u8 = 7;
    pub const ENDED: u8 = 8;
}

/// Kinds of an event-stream line, from its first bytes ([`SseBody::lkind`]).
mod line {
    /// Still could be `data` (or is empty so far).
    pub const MAYBE_DATA: u8 = 0;
    pub const DATA: u8 = 1;
    pub const COMMENT: u8 = 2;
    pub const OTHER: u8 = 3;
}

/// [`SseBody::bits`].
pub mod body_bits {
    /// The body is chunked (de-framed before the event parser).
    pub const CHUNKED: u8 = 1;
    /// Compressed: bytes counted, events and comments not parsed.
    pub const RAW: u8 = 2;
    /// The current block has a `data` field.
    pub const BLOCK_DATA: u8 = 4;
    /// The last byte was a CR (an LF right after it ends no second line).
    pub const CR: u8 = 8;
}

const BOM: [u8; 4] = [0xef, 0xbb, 0xbf, 0];
const BOM_DONE: u8 = 3;

/// Scanner of an SSE response body. 16 bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SseBody {
    /// Chunked: bytes left in the current chunk's data (or the size being read).
    pub chunk_left: u64,
    pub cstate: u8,
    /// Hex digits of the current chunk size.
    pub digits: u8,
    /// Bytes on the current event-stream line (saturating at 8).
    pub lpos: u8,
    pub lkind: u8,
    pub bits: u8,
    /// Bytes of the leading BOM matched (3 = past the stream's start).
    pub bom: u8,
    pub _pad: [u8; 2],
}

impl SseBody {
    /// A body as the response head described it.
    pub fn new(chunked: bool, raw: bool) -> Self {
        let bits = if chunked { body_bits::CHUNKED } else { 0 } | if raw { body_bits::RAW } else { 0 };
        Self { bits, ..Self::default() }
    }

    /// Feed a whole buffer (userspace and tests), window by window as the probe does.
    pub fn feed(&mut self, data: &[u8], d: &mut SseDelta) -> (usize, Body) {
        let mut pos = 0;
        while pos < data.len() {
            let n = core::cmp::min(WINDOW, data.len() - pos);
            let mut win = [0u8; WINDOW];
            win[..n].copy_from_slice(&data[pos..pos + n]);
            let (used, r) = self.consume(&win, n, d);
            pos += used;
            if r != Body::More {
                return (pos, r);
            }
        }
        (pos, Body::More)
    }

    /// Feed `win[..len]` (`len <= WINDOW`); returns bytes consumed and the verdict.
    #[inline(always)]
    pub fn consume(&mut self, win: &[u8; WINDOW], len: usize, d: &mut SseDelta) -> (usize, Body) {
        let mut i = 0usize;
        while i < WINDOW {
            if i >= len {
                break;
            }
            match self.byte(win[i], d) {
                Body::More => {}
                other => return (i + 1, other),
            }
            i += 1;
        }
        (i, Body::More)
    }

    /// Feed one byte of the body.
    #[inline(always)]
    pub fn byte(&mut self, b: u8, d: &mut SseDelta) -> Body {
        if self.bits & body_bits::CHUNKED == 0 {
            self.event_byte(b, d);
            return Body::More;
        }
        match self.cstate {
            chunk::SIZE => {
                let v = hex(b);
                if v < 16 {
                    if self.digits >= 15 {
                        return Body::Bad;
                    }
                    self.digits += 1;
                    self.chunk_left = (self.chunk_left << 4) | v as u64;
                } else if self.digits == 0 {
                    return Body::Bad;
                } else if b == b'\n' {
                    self.size_line_done();
                } else if b == b';' || b == b' ' || b == b'\t' || b == b'\r' {
                    self.cstate = chunk::EXT;
                } else {
                    return Body::Bad;
                }
            }
            chunk::EXT => {
                if b == b'\n' {
                    self.size_line_done();
                }
            }
            chunk::DATA => {
                self.event_byte(b, d);
                self.chunk_left -= 1;
                if self.chunk_left == 0 {
                    self.cstate = chunk::DATA_END;
                }
            }
            chunk::DATA_END | chunk::DATA_LF => {
                if b == b'\n' {
                    self.cstate = chunk::SIZE;
                } else if b == b'\r' && self.cstate == chunk::DATA_END {
                    self.cstate = chunk::DATA_LF;
                } else {
                    return Body::Bad;
                }
            }
            chunk::TRAILER_START => match b {
                b'\n' => return self.ended(),
                b'\r' => self.cstate = chunk::TRAILER_LF,
                _ => self.cstate = chunk::TRAILER,
            },
            chunk::TRAILER => {
                if b == b'\n' {
                    self.cstate = chunk::TRAILER_START;
                }
            }
            chunk::TRAILER_LF => {
                if b != b'\n' {
                    return Body::Bad;
                }
                return self.ended();
            }
            _ => return Body::Ended,
        }
        Body::More
    }

    #[inline(always)]
    fn ended(&mut self) -> Body {
        self.cstate = chunk::ENDED;
        Body::Ended
    }

    #[inline(always)]
    fn size_line_done(&mut self) {
        self.digits = 0;
        self.cstate = if self.chunk_left == 0 { chunk::TRAILER_START } else { chunk::DATA };
    }

    /// One byte of the event stream itself.
    #[inline(always)]
    fn event_byte(&mut self, b: u8, d: &mut SseDelta) {
        d.payload_bytes += 1;
        if self.bits & body_bits::RAW != 0 {
            return;
        }
        if self.bom < BOM_DONE {
            if b == BOM[self.bom as usize & 3] {
                self.bom += 1;
                return;
            }
            if self.bom > 0 {
                // Not a BOM after all: its bytes began a line that is no field we count.
                self.lpos = self.bom;
                self.lkind = line::OTHER;
            }
            self.bom = BOM_DONE;
        }
        let cr = self.bits & body_bits::CR != 0;
        self.bits &= !body_bits::CR;
        if b == b'\n' || b == b'\r' {
            if b == b'\r' {
                self.bits |= body_bits::CR;
            } else if cr {
                return; // the LF of a CRLF
            }
            if self.lpos == 0 {
                if self.bits & body_bits::BLOCK_DATA != 0 {
                    d.events += 1;
                    self.bits &= !body_bits::BLOCK_DATA;
                }
            } else if self.lkind == line::DATA || (self.lkind == line::MAYBE_DATA && self.lpos == 4) {
                self.bits |= body_bits::BLOCK_DATA;
            } else if self.lkind == line::COMMENT {
                d.comments += 1;
            }
            self.lpos = 0;
            self.lkind = line::MAYBE_DATA;
            return;
        }
        if self.lpos == 0 && b == b':' {
            self.lkind = line::COMMENT;
        } else if self.lkind == line::MAYBE_DATA {
            if self.lpos < 4 && b == b"data"[self.lpos as usize & 3] {
            } else if self.lpos == 4 && b == b':' {
                self.lkind = line::DATA;
            } else {
                self.lkind = line::OTHER;
            }
        }
        if self.lpos < 8 {
            self.lpos += 1;
        }
    }
}

#[inline(always)]
fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 16,
    }
}

/// [`SseConn::flags`].
pub mod conn_flags {
    /// The request of the current exchange carried `Last-Event-ID`.
    pub const RESUMED: u8 = 1;
    /// The current response's head was scanned and is not an SSE stream: its body is not
    /// walked (the next request starts a new exchange).
    pub const RESP_DONE: u8 = 2;
    /// The connection carried an SSE stream (a known transport at its end, not `not_websocket`).
    pub const WAS_SSE: u8 = 4;
    /// `Content-Encoding` compressed: events not parsed.
    pub const UNPARSEABLE: u8 = 8;
}

/// [`SseConn::fin`]: which side's FIN (or reset) came first while the stream was open.
pub mod fin {
    pub const NONE: u8 = 0;
    /// `ESTABLISHED → CLOSE_WAIT` (or `CLOSE`: a reset): the client went away.
    pub const CLIENT: u8 = 1;
    /// `ESTABLISHED → FIN_WAIT1`: the server closed first.
    pub const SERVER: u8 = 2;
}

/// The SSE part of a connection's state (in `ConnState`): the head scanners' state before and
/// while the stream is recognised, then the stream's counters and its body scanner. 80 bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SseConn {
    pub events: u64,
    pub comments: u64,
    pub payload_bytes: u64,
    /// The last event written (the stream's start until one is).
    pub last_event_ns: u64,
    pub body: SseBody,
    /// The request head (`Last-Event-ID`), then the response head.
    pub head: SseHead,
    /// [`conn_flags`].
    pub flags: u8,
    /// [`fin`]; written only by the TCP state-change hook, so in a byte of its own.
    pub fin: u8,
    pub _pad: [u8; 6],
    pub _pad2: u64,
}

/// Per-process SSE counters (in `ProcStats`), cumulative.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SseProcStats {
    pub opened: u64,
    pub closed: u64,
    pub events: u64,
    pub comments: u64,
    pub payload_bytes: u64,
    pub resumed: u64,
    pub closed_by_client: u64,
    pub closed_by_server: u64,
    pub unparseable: u64,
    pub out_of_sync: u64,
}

impl SseProcStats {
    pub fn add(&mut self, o: &SseProcStats) {
        self.opened += o.opened;
        self.closed += o.closed;
        self.events += o.events;
        self.comments += o.comments;
        self.payload_bytes += o.payload_bytes;
        self.resumed += o.resumed;
        self.closed_by_client += o.closed_by_client;
        self.closed_by_server += o.closed_by_server;
        self.unparseable += o.unparseable;
        self.out_of_sync += o.out_of_sync;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn head(side: u8, data: &[u8]) -> (usize, Scan, SseHead) {
        let mut s = SseHead::new(side);
        let (n, r) = s.feed(data);
        (n, r, s)
    }

    const NODE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
Date: Mon, 07 Dec 2026 04:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
Transfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn response_heads() {
        let (n, r, s) = head(side::RESPONSE, NODE);
        assert_eq!((n, r), (NODE.len(), Scan::Done));
        assert!(s.is_stream());
        assert_eq!(s.found, found::EVENT_STREAM | found::CHUNKED);
        let go = b"HTTP/1.1 200 OK\r\ncontent-type:TEXT/Event-Stream; charset=utf-8\r\n\r\ndata: x\n\n";
        let (n, r, s) = head(side::RESPONSE, go);
        assert_eq!((n, r, s.found), (go.len() - 9, Scan::Done, found::EVENT_STREAM));
        let gz = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: text/event-stream\r\n\r\n";
        assert_eq!(head(side::RESPONSE, gz).2.found, found::EVENT_STREAM | found::COMPRESSED);
        let id = b"HTTP/1.1 200 OK\r\nContent-Encoding:  identity \r\nContent-Type: text/event-stream\r\n\r\n";
        assert_eq!(head(side::RESPONSE, id).2.found, found::EVENT_STREAM);
        for not in [
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-streams\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-Content-Type: text/event-stream\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX: text/event-stream\r\n\r\n",
        ] {
            let (_, r, s) = head(side::RESPONSE, not);
            assert_eq!(r, Scan::Done);
            assert!(!s.is_stream(), "{}", std::string::String::from_utf8_lossy(not));
        }
        let (_, r, s) = head(side::RESPONSE, b"HTTP/1.1 404 Not Found\r\nContent-Type: text/event-stream\r\n\r\n");
        assert_eq!((r, s.status, s.is_stream()), (Scan::Done, 404, false));
        assert_eq!(head(side::RESPONSE, b"HTTX/1.1 200").1, Scan::NotHttp);
    }

    #[test]
    fn request_heads() {
        let r = b"GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 42\r\nAccept: text/event-stream\r\n\r\n";
        let (n, v, s) = head(side::REQUEST, r);
        assert_eq!((n, v), (r.len(), Scan::Done));
        assert_eq!(s.found, found::LAST_EVENT_ID);
        let r = b"GET /last-event-id: HTTP/1.1\r\nX-Last-Event-ID: 1\r\n\r\n";
        assert_eq!(head(side::REQUEST, r).2.found, 0);
    }

    #[test]
    fn heads_split_anywhere() {
        for cut in 0..=NODE.len() {
            let mut s = SseHead::new(side::RESPONSE);
            let (a, r1) = s.feed(&NODE[..cut]);
            let (b, r2) = s.feed(&NODE[cut..]);
            let r = if cut == NODE.len() { r1 } else { r2 };
            assert_eq!((a + b, r), (NODE.len(), Scan::Done));
            assert_eq!(s.found, found::EVENT_STREAM | found::CHUNKED, "cut {cut}");
        }
    }

    /// The event-stream parser of the HTML standard, written plainly over a whole stream:
    /// (events, comments).
    fn reference(stream: &[u8]) -> (u64, u64) {
        let s = stream.strip_prefix(&[0xef, 0xbb, 0xbf][..]).unwrap_or(stream);
        let (mut events, mut comments, mut has_data) = (0, 0, false);
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < s.len() {
            if s[i] == b'\n' || s[i] == b'\r' {
                lines.push(&s[start..i]);
                if s[i] == b'\r' && i + 1 < s.len() && s[i + 1] == b'\n' {
                    i += 1;
                }
                start = i + 1;
            }
            i += 1;
        }
        for l in lines {
            if l.is_empty() {
                if has_data {
                    events += 1;
                }
                has_data = false;
            } else if l[0] == b':' {
                comments += 1;
            } else {
                let name = l.split(|&b| b == b':').next().unwrap();
                if name == b"data" {
                    has_data = true;
                }
            }
        }
        (events, comments)
    }

    const EVENTS: &[u8] = b"\xef\xbb\xbf: hello\r\n\r\ndata: one\n\nid: 7\nevent: x\ndata:two\ndata\r\n\r\n\
retry: 10\n\n:keepalive\rdata: three\r\rdata: four\r\n:\n\ndatax: no\n\ndata : no\n\nevent: none\n\n\
data: split\ndata: lines\n\ndata: unfinished";

    fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut pos, mut i) = (0, 0);
        while pos < body.len() {
            let n = sizes[i % sizes.len()].min(body.len() - pos);
            i += 1;
            let ext = if i % 3 == 0 { ";name=val" } else { "" };
            out.extend_from_slice(std::format!("{n:X}{ext}\r\n").as_bytes());
            out.extend_from_slice(&body[pos..pos + n]);
            out.extend_from_slice(b"\r\n");
            pos += n;
        }
        out
    }

    fn run(body: &mut SseBody, data: &[u8]) -> (SseDelta, usize, Body) {
        let mut d = SseDelta::default();
        let (n, r) = body.feed(data, &mut d);
        (d, n, r)
    }

    #[test]
    fn events_comments_and_bytes_match_the_reference() {
        assert_eq!(reference(EVENTS), (5, 3));
        let (d, n, r) = run(&mut SseBody::new(false, false), EVENTS);
        assert_eq!((d.events, d.comments, d.payload_bytes, n, r), (5, 3, EVENTS.len() as u64, EVENTS.len(), Body::More));
        // A BOM that is not one begins an ordinary line.
        let s = b"\xef\xbbdata: x\n\ndata: y\n\n";
        assert_eq!(reference(s), (1, 0));
        assert_eq!(run(&mut SseBody::new(false, false), s).0.events, 1);
        // Compressed: bytes only.
        let (d, ..) = run(&mut SseBody::new(false, true), EVENTS);
        assert_eq!((d.events, d.comments, d.payload_bytes), (0, 0, EVENTS.len() as u64));
    }

    #[test]
    fn chunked_body_is_deframed_and_its_end_found() {
        let mut wire = chunked(EVENTS, &[1, 7, 300, 2]);
        wire.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
        let (d, n, r) = run(&mut SseBody::new(true, false), &wire);
        assert_eq!((d.events, d.comments, d.payload_bytes), (5, 3, EVENTS.len() as u64));
        assert_eq!((n, r), (wire.len(), Body::Ended));
        // Bare LFs and no trailers.
        let wire = b"b\ndata: abc\n\n\n0\n\n";
        let (d, n, r) = run(&mut SseBody::new(true, false), wire);
        assert_eq!((d.events, d.payload_bytes, n, r), (1, 11, wire.len(), Body::Ended));
        for bad in [&b"x\r\n"[..], b"\r\n", b"2\r\nabX", b"1234567890abcdef0\r\n", b"0\r\n\rX"] {
            assert_eq!(run(&mut SseBody::new(true, false), bad).2, Body::Bad, "{bad:?}");
        }
    }

    /// Every split of a stream into two writes, and some into many, give the whole stream's
    /// counts.
    #[test]
    fn every_split_gives_the_whole_streams_counts() {
        let mut wire = chunked(EVENTS, &[5, 16, 1, 64]);
        wire.extend_from_slice(b"0\r\n\r\n");
        for (chunked, data) in [(false, EVENTS), (true, &wire[..])] {
            let (whole, ..) = run(&mut SseBody::new(chunked, false), data);
            for cut in 0..=data.len() {
                let mut b = SseBody::new(chunked, false);
                let (mut d, ..) = run(&mut b, &data[..cut]);
                let (d2, ..) = run(&mut b, &data[cut..]);
                d.events += d2.events;
                d.comments += d2.comments;
                d.payload_bytes += d2.payload_bytes;
                assert_eq!(d, whole, "chunked {chunked} cut {cut}");
            }
            for step in [1, 2, 3, 7, 17] {
                let mut b = SseBody::new(chunked, false);
                let mut sum = SseDelta::default();
                for piece in data.chunks(step) {
                    let (d, ..) = run(&mut b, piece);
                    sum.events += d.events;
                    sum.comments += d.comments;
                    sum.payload_bytes += d.payload_bytes;
                }
                assert_eq!(sum, whole, "chunked {chunked} step {step}");
            }
        }
    }

    #[test]
    fn layout() {
        use core::mem::size_of;
        assert_eq!(size_of::<SseHead>(), 16);
        assert_eq!(size_of::<SseBody>(), 16);
        assert_eq!(size_of::<SseConn>(), 80);
        assert_eq!(size_of::<SseProcStats>() % 8, 0);
    }
}
