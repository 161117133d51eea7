//! Streaming RFC 6455 frame accounting that walks headers and skips payloads arithmetically.
//!
//! One [`FrameState`] per direction of a connection survives across syscalls: the payload bytes
//! left in the current frame, a partial header (up to 14 bytes) and a partial close code. The
//! caller drives it with two calls:
//!
//! * [`FrameState::skippable`]: payload bytes it may jump over without reading them;
//! * [`FrameState::consume`]: a window of up to [`WINDOW`] bytes at the current position, of which
//!   the parser takes at least one.
//!
//! The kernel probe runs this loop over user memory from a `bpf_loop` callback; [`FrameState::feed`]
//! runs it over a slice for userspace and tests. Frames and messages count when their header is
//! decoded; payload bytes count as they pass (skipped, or read as a close code), never as a header
//! declares them: a peer may declare 2^63-1 bytes and send three. Masking and permessage-deflate
//! (RSV1) do not change framing, and only the close code is unmasked.

/// Largest header: 2 + 8 (64-bit length) + 4 (mask key).
pub const MAX_HEADER: usize = 14;
/// Size of the window buffers (a power of two so indexes can be masked for the verifier).
pub const WINDOW: usize = 16;
const WMASK: usize = WINDOW - 1;

/// Opcodes of RFC 6455 §5.2.
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Index of each opcode in [`DirCounters::frames`]; also the order of the JSON/metric labels.
pub mod slot {
    pub const TEXT: usize = 0;
    pub const BINARY: usize = 1;
    pub const CONTINUATION: usize = 2;
    pub const PING: usize = 3;
    pub const PONG: usize = 4;
    pub const CLOSE: usize = 5;
    pub const COUNT: usize = 6;
    pub const NAMES: [&str; COUNT] = ["text", "binary", "continuation", "ping", "pong", "close"];
}

/// Why framing could not be followed. The connection is then marked out of sync.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desync {
    /// Opcodes 0x3–0x7 and 0xB–0xF are reserved.
    ReservedOpcode = 1,
    /// Control frames carry at most 125 bytes (RFC 6455 §5.5).
    ControlTooLong = 2,
    /// Control frames must not be fragmented.
    ControlFragmented = 3,
    /// RSV2/RSV3 set, or RSV1 without a negotiated extension.
    BadRsv = 4,
    /// A 64-bit length with its most significant bit set.
    BadLength = 5,
}

/// Frame counts, data messages and payload bytes for one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirCounters {
    /// Data messages completed (a text, binary or continuation frame with FIN).
    pub messages: u64,
    /// Payload bytes that passed the parser. Never a header's declared length: mid-frame it is
    /// what was seen so far, and a frame that never completes adds only what was sent.
    pub payload_bytes: u64,
    /// Frames by opcode, indexed by [`slot`].
    pub frames: [u64; slot::COUNT],
}

impl DirCounters {
    /// Count one frame (its header was decoded). Its payload counts as it passes ([`Self::payload`]).
    #[inline(always)]
    pub fn record(&mut self, h: &FrameHeader) {
        let s = match h.opcode {
            opcode::TEXT => slot::TEXT,
            opcode::BINARY => slot::BINARY,
            opcode::CONTINUATION => slot::CONTINUATION,
            opcode::PING => slot::PING,
            opcode::PONG => slot::PONG,
            _ => slot::CLOSE,
        };
        if let Some(f) = self.frames.get_mut(s) {
            *f += 1;
        }
        if h.fin && h.is_data() {
            self.messages += 1;
        }
    }

    /// Count `n` payload bytes that passed.
    #[inline(always)]
    pub fn payload(&mut self, n: u64) {
        self.payload_bytes += n;
    }

    /// Add another set of counters (used to fold deltas).
    #[inline(always)]
    pub fn add(&mut self, o: &DirCounters) {
        let mut i = 0;
        while i < slot::COUNT {
            self.frames[i] += o.frames[i];
            i += 1;
        }
        self.messages += o.messages;
        self.payload_bytes += o.payload_bytes;
    }

    /// Total frames of all opcodes.
    pub fn total_frames(&self) -> u64 {
        self.frames.iter().sum()
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload_len: u64,
    /// Header size on the wire (2..=14).
    pub header_len: u8,
    pub mask: [u8; 4],
}

impl FrameHeader {
    #[inline(always)]
    pub fn is_data(&self) -> bool {
        self.opcode <= opcode::BINARY
    }
    #[inline(always)]
    pub fn is_control(&self) -> bool {
        self.opcode >= opcode::CLOSE
    }
}

/// What the parser saw, for the caller to count and time.
pub trait Sink {
    /// A complete frame header.
    fn frame(&mut self, h: &FrameHeader);
    /// The status code of a close frame (1005 "no status" when the close frame has no payload).
    fn close_code(&mut self, code: u16);
    /// `n` payload bytes passed: skipped, or taken as a close code. Over a whole stream these add
    /// up to the declared lengths of its complete frames plus what arrived of an incomplete one.
    fn payload(&mut self, n: u64);
}

/// Code recorded for a close frame without a status code (RFC 6455 §7.4.1, 1005).
pub const NO_STATUS: u16 = 1005;

const F_IN_CLOSE: u8 = 1;
/// permessage-deflate (or another RSV1 extension) was negotiated: RSV1 is legal on data frames.
pub const F_RSV1_OK: u8 = 2;
/// Not the parser's (it never sets or clears it): the probe marks a direction whose payload
/// bytes were counted on the connection but not yet on the process (see `conn::skip_payload`).
pub const F_PROC_OWED: u8 = 4;

/// Framing state of one direction of a connection. The first 16 bytes (up to `hdr`) are what
/// every syscall uses; `hdr` only matters while `hdr_len > 0` (a header split across syscalls),
/// so the probe keeps it apart from the hot part (see `conn::ConnState`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameState {
    /// Payload bytes left in the current frame.
    pub remaining: u64,
    pub hdr_len: u8,
    pub flags: u8,
    /// Close-code bytes collected so far (0..=2) and the first one, already unmasked.
    pub close_got: u8,
    pub close_b0: u8,
    /// The two mask bytes that cover the close code.
    pub close_mask: [u8; 2],
    pub _pad: [u8; 2],
    /// Partial header carried over from the previous syscall (`hdr_len` bytes).
    pub hdr: [u8; WINDOW],
}

/// The first 16 bytes of a [`FrameState`] (everything but the partial header), field for
/// field: what the connection map keeps in each direction's hot cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameHot {
    pub remaining: u64,
    pub hdr_len: u8,
    pub flags: u8,
    pub close_got: u8,
    pub close_b0: u8,
    pub close_mask: [u8; 2],
    pub _pad: [u8; 2],
}

impl FrameHot {
    /// Payload bytes that can be skipped without reading them (as [`FrameState::skippable`]).
    #[inline(always)]
    pub fn skippable(&self) -> u64 {
        if self.flags & F_IN_CLOSE != 0 {
            0
        } else {
            self.remaining
        }
    }

    /// The state of a fresh direction; `rsv1_ok` as for [`FrameState::new`].
    pub fn set_rsv1_ok(&mut self, ok: bool) {
        if ok {
            self.flags |= F_RSV1_OK;
        } else {
            self.flags &= !F_RSV1_OK;
        }
    }
}

impl FrameState {
    /// A parser for a connection; `rsv1_ok` when an RSV1 extension (permessage-deflate) was agreed.
    pub fn new(rsv1_ok: bool) -> Self {
        let mut s = Self::default();
        s.set_rsv1_ok(rsv1_ok);
        s
    }

    pub fn set_rsv1_ok(&mut self, ok: bool) {
        if ok {
            self.flags |= F_RSV1_OK;
        } else {
            self.flags &= !F_RSV1_OK;
        }
    }

    /// Payload bytes that can be skipped without reading them.
    #[inline(always)]
    pub fn skippable(&self) -> u64 {
        if self.flags & F_IN_CLOSE != 0 {
            0
        } else {
            self.remaining
        }
    }

    /// Skip `n <= skippable()` payload bytes, counting them as passed.
    #[inline(always)]
    pub fn skip<S: Sink>(&mut self, n: u64, sink: &mut S) {
        self.remaining -= n;
        sink.payload(n);
    }

    /// True between frames with no partial header pending: a clean cut point.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.hdr_len == 0
    }

    /// Take bytes from `win[..len]` (`1 <= len <= WINDOW`), the stream at the current position.
    /// Returns how many bytes were consumed (at least 1 unless `len == 0`).
    #[inline(always)]
    pub fn consume<S: Sink>(&mut self, win: &[u8; WINDOW], len: usize, sink: &mut S) -> Result<usize, Desync> {
        if len == 0 {
            return Ok(0);
        }
        if self.flags & F_IN_CLOSE != 0 {
            return Ok(self.consume_close_code(win, len, sink));
        }
        self.consume_header(win, len, sink)
    }

    /// Collect the two (masked) bytes of a close frame's status code, one or two at a time.
    #[inline(always)]
    fn consume_close_code<S: Sink>(&mut self, win: &[u8; WINDOW], len: usize, sink: &mut S) -> usize {
        let mut used = 0usize;
        while used < 2 && used < len && self.close_got < 2 && self.remaining > 0 {
            let i = (self.close_got & 1) as usize;
            let b = win[used & WMASK] ^ self.close_mask[i];
            if self.close_got == 0 {
                self.close_b0 = b;
            } else {
                sink.close_code(u16::from_be_bytes([self.close_b0, b]));
            }
            self.close_got += 1;
            self.remaining -= 1;
            used += 1;
        }
        if self.close_got >= 2 || self.remaining == 0 {
            self.flags &= !F_IN_CLOSE;
        }
        sink.payload(used as u64);
        used
    }

    /// Parse a header from the carried-over partial header followed by `win[..len]`.
    #[inline(always)]
    fn consume_header<S: Sink>(&mut self, win: &[u8; WINDOW], len: usize, sink: &mut S) -> Result<usize, Desync> {
        let old = (self.hdr_len as usize) & WMASK;
        if old == 0 {
            // No partial header (the common case): decode straight from the window. Only an
            // incomplete header (len < its size <= MAX_HEADER) is kept for the next syscall.
            return match parse_header(win, len)? {
                Some(h) => self.header_done(h, 0, sink),
                None => {
                    let mut j = 0usize;
                    while j < MAX_HEADER {
                        if j < len {
                            self.hdr[j & WMASK] = win[j & WMASK];
                        }
                        j += 1;
                    }
                    self.hdr_len = len as u8;
                    Ok(len)
                }
            };
        }
        let take = if len < MAX_HEADER - old { len } else { MAX_HEADER - old };
        // Append win[..take] to the partial header in place (stores at `old + j`: no stack
        // buffer to zero, and never `win - old`, which the verifier refuses on stack pointers).
        let mut j = 0usize;
        while j < MAX_HEADER {
            if j < take {
                self.hdr[(old + j) & WMASK] = win[j];
            }
            j += 1;
        }
        let have = old + take;
        let h = match parse_header(&self.hdr, have)? {
            Some(h) => h,
            None => {
                // Incomplete: keep what we have for the next syscall.
                self.hdr_len = have as u8;
                return Ok(take);
            }
        };
        self.header_done(h, old, sink)
    }

    /// A complete header of which `old` bytes came from the previous syscall: check it, count
    /// it and set up its payload. Returns the header bytes taken from this window.
    #[inline(always)]
    fn header_done<S: Sink>(&mut self, h: FrameHeader, old: usize, sink: &mut S) -> Result<usize, Desync> {
        if h.rsv1 && (self.flags & F_RSV1_OK == 0 || h.is_control()) {
            return Err(Desync::BadRsv);
        }
        self.hdr_len = 0;
        self.remaining = h.payload_len;
        sink.frame(&h);
        if h.opcode == opcode::CLOSE {
            if h.payload_len >= 2 {
                self.flags |= F_IN_CLOSE;
                self.close_got = 0;
                self.close_mask = [h.mask[0], h.mask[1]];
            } else {
                sink.close_code(NO_STATUS);
            }
        }
        Ok(h.header_len as usize - old)
    }

    /// Feed a whole buffer (userspace and tests). Stops at the first framing error.
    pub fn feed<S: Sink>(&mut self, data: &[u8], sink: &mut S) -> Result<(), Desync> {
        let mut pos = 0usize;
        while pos < data.len() {
            let left = (data.len() - pos) as u64;
            let skip = if self.skippable() < left { self.skippable() } else { left };
            if skip > 0 {
                self.skip(skip, sink);
                pos += skip as usize;
                continue;
            }
            let n = core::cmp::min(WINDOW, data.len() - pos);
            let mut win = [0u8; WINDOW];
            win[..n].copy_from_slice(&data[pos..pos + n]);
            pos += self.consume(&win, n, sink)?;
        }
        Ok(())
    }
}

/// Decode a header from `buf[..have]`: `Ok(None)` if more bytes are needed.
#[inline(always)]
pub fn parse_header(buf: &[u8; WINDOW], have: usize) -> Result<Option<FrameHeader>, Desync> {
    if have < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let op = b0 & 0x0f;
    if (0x3..=0x7).contains(&op) || op >= 0xB {
        return Err(Desync::ReservedOpcode);
    }
    if b0 & 0x30 != 0 {
        return Err(Desync::BadRsv);
    }
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let len7 = (b1 & 0x7f) as u64;
    let ext = match len7 {
        126 => 2usize,
        127 => 8usize,
        _ => 0usize,
    };
    let header_len = 2 + ext + if masked { 4 } else { 0 };
    if op >= opcode::CLOSE {
        if ext != 0 {
            return Err(Desync::ControlTooLong);
        }
        if !fin {
            return Err(Desync::ControlFragmented);
        }
    }
    if have < header_len {
        return Ok(None);
    }
    let payload_len = match ext {
        2 => u16::from_be_bytes([buf[2], buf[3]]) as u64,
        8 => {
            let v = u64::from_be_bytes([buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], buf[8], buf[9]]);
            if v >> 63 != 0 {
                return Err(Desync::BadLength);
            }
            v
        }
        _ => len7,
    };
    let mut mask = [0u8; 4];
    if masked {
        let m = 2 + ext;
        mask = [buf[m & WMASK], buf[(m + 1) & WMASK], buf[(m + 2) & WMASK], buf[(m + 3) & WMASK]];
    }
    Ok(Some(FrameHeader { fin, rsv1: b0 & 0x40 != 0, opcode: op, masked, payload_len, header_len: header_len as u8, mask }))
}

#[cfg(test)]
mod tests;
