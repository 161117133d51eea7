//! Streaming scanner for the HTTP/1.1 upgrade handshake, fed a few bytes at a time.
//!
//! It classifies a connection from its first bytes: a request must start with `GET ` and carry an
//! `Upgrade:` header whose value contains `websocket`; the response's status line gives `101` or
//! not, and a `Sec-WebSocket-Extensions:` header naming `permessage-deflate` makes RSV1 legal.
//! The scanner stops right after the blank line, so frames that follow in the same syscall are
//! handed to the frame parser. State is a few bytes, so a head split across syscalls at any byte
//! gives the same answer.

use crate::frame::WINDOW;

/// A head longer than this is not followed (the connection is treated as not WebSocket).
pub const MAX_HEAD: u32 = 8192;

const NAME_LEN: usize = 32;
const NMASK: usize = NAME_LEN - 1;

/// Header name (lowercase, with colon) and value token for each side, padded for masked indexing.
struct Pattern {
    name: [u8; NAME_LEN],
    name_len: u8,
    token: [u8; NAME_LEN],
    token_len: u8,
}

const fn pad(s: &[u8]) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    let mut i = 0;
    while i < s.len() {
        out[i] = s[i];
        i += 1;
    }
    out
}

const REQUEST: Pattern = Pattern { name: pad(b"upgrade:"), name_len: 8, token: pad(b"websocket"), token_len: 9 };
const RESPONSE: Pattern =
    Pattern { name: pad(b"sec-websocket-extensions:"), name_len: 25, token: pad(b"permessage-deflate"), token_len: 18 };

/// Which head is being scanned.
pub mod side {
    pub const REQUEST: u8 = 0;
    pub const RESPONSE: u8 = 1;
}

const F_IN_VALUE: u8 = 1;
const F_NAME_DEAD: u8 = 2;
const F_FOUND: u8 = 4;

/// Result of feeding bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Head not complete yet; all bytes consumed.
    More,
    /// The head ended; the bytes consumed include the blank line.
    Done,
    /// Not an HTTP head of the expected kind (or longer than [`MAX_HEAD`]).
    NotHttp,
}

/// Scanner state, kept in the connection map between syscalls. 16 bytes, 8-byte aligned, so the
/// probe copies it word by word.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpScan {
    /// Bytes of the head seen so far.
    pub total: u32,
    /// Response status (0 until its three digits were seen).
    pub status: u16,
    /// Non-CR bytes on the current line.
    pub line_len: u16,
    /// Bytes of the header name matched on this line.
    pub name_m: u8,
    /// Bytes of the token matched in the current value.
    pub token_m: u8,
    pub flags: u8,
    pub side: u8,
    pub _pad: u32,
}

impl HttpScan {
    pub fn new(side: u8) -> Self {
        Self { side, ..Self::default() }
    }

    /// Request: it asked for `Upgrade: websocket`. Response: it agreed `permessage-deflate`.
    pub fn found(&self) -> bool {
        self.flags & F_FOUND != 0
    }

    /// Feed `win[..len]` (`len <= WINDOW`); returns bytes consumed and the verdict.
    #[inline(always)]
    pub fn consume(&mut self, win: &[u8; WINDOW], len: usize) -> (usize, Scan) {
        let mut i = 0usize;
        while i < WINDOW {
            if i >= len {
                break;
            }
            match self.byte(win[i]) {
                Scan::More => {}
                other => return (i + 1, other),
            }
            i += 1;
        }
        (i, Scan::More)
    }

    /// Feed a whole buffer (userspace and tests).
    pub fn feed(&mut self, data: &[u8]) -> (usize, Scan) {
        let mut pos = 0;
        while pos < data.len() {
            let n = core::cmp::min(WINDOW, data.len() - pos);
            let mut win = [0u8; WINDOW];
            win[..n].copy_from_slice(&data[pos..pos + n]);
            let (used, r) = self.consume(&win, n);
            pos += used;
            if r != Scan::More {
                return (pos, r);
            }
        }
        (pos, Scan::More)
    }

    /// Feed one byte. The kernel probe calls this once per loop step: scanning a whole window
    /// per step gives the verifier too many branch combinations to follow.
    #[inline(always)]
    pub fn byte(&mut self, b: u8) -> Scan {
        let at = self.total;
        self.total += 1;
        if at >= MAX_HEAD {
            return Scan::NotHttp;
        }
        if self.side == side::REQUEST {
            if at < 4 && b != b"GET "[at as usize & 3] {
                return Scan::NotHttp;
            }
        } else if at < 12 {
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
                self.line_len = 0;
                self.name_m = 0;
                self.token_m = 0;
                self.flags &= F_FOUND;
                Scan::More
            }
            b'\r' => Scan::More,
            _ => {
                self.line_len = self.line_len.saturating_add(1);
                self.match_header(b.to_ascii_lowercase());
                Scan::More
            }
        }
    }

    #[inline(always)]
    fn match_header(&mut self, c: u8) {
        let p = if self.side == side::REQUEST { &REQUEST } else { &RESPONSE };
        if self.flags & F_IN_VALUE != 0 {
            let m = self.token_m as usize & NMASK;
            if c == p.token[m] {
                self.token_m += 1;
                if self.token_m >= p.token_len {
                    self.flags |= F_FOUND;
                    self.token_m = 0;
                }
            } else {
                self.token_m = (c == p.token[0]) as u8;
            }
        } else if self.flags & F_NAME_DEAD == 0 {
            let m = self.name_m as usize & NMASK;
            if c == p.name[m] {
                self.name_m += 1;
                if self.name_m >= p.name_len {
                    self.flags |= F_IN_VALUE;
                }
            } else {
                self.flags |= F_NAME_DEAD;
            }
        }
    }
}

/// `HTTP/1.x SSS`: byte `at` (< 12) of a status line.
#[inline(always)]
pub(crate) fn status_line_byte(at: u32, b: u8) -> bool {
    match at {
        0..=6 => b == b"HTTP/1.\0"[at as usize & 7],
        7 => b.is_ascii_digit(),
        8 => b == b' ',
        _ => b.is_ascii_digit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(side: u8, data: &[u8]) -> (usize, Scan, HttpScan) {
        let mut s = HttpScan::new(side);
        let (n, r) = s.feed(data);
        (n, r, s)
    }

    const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn upgrade_request_is_found_and_ends_at_blank_line() {
        let mut data = UPGRADE.to_vec();
        data.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let (n, r, s) = scan(side::REQUEST, &data);
        assert_eq!(r, Scan::Done);
        assert_eq!(n, UPGRADE.len());
        assert!(s.found());
    }

    #[test]
    fn plain_get_is_not_an_upgrade_even_with_websocket_in_path_or_key() {
        let req = b"GET /websocket HTTP/1.1\r\nSec-WebSocket-Key: abc\r\nX-Upgrade: websocket\r\n\r\n";
        let (_, r, s) = scan(side::REQUEST, req);
        assert_eq!(r, Scan::Done);
        assert!(!s.found());
    }

    #[test]
    fn header_case_and_spacing_and_lists() {
        let req = b"GET / HTTP/1.1\r\nUPGRADE:WebSocket\r\n\r\n";
        assert!(scan(side::REQUEST, req).2.found());
        let req = b"GET / HTTP/1.1\nupgrade:  h2c, websocket\n\n";
        let (_, r, s) = scan(side::REQUEST, req);
        assert_eq!(r, Scan::Done);
        assert!(s.found());
    }

    #[test]
    fn non_get_is_rejected_at_once() {
        assert_eq!(scan(side::REQUEST, b"POST / HTTP/1.1\r\n").1, Scan::NotHttp);
        assert_eq!(scan(side::REQUEST, b"\x16\x03\x01").1, Scan::NotHttp);
        assert_eq!(scan(side::REQUEST, b"GE").1, Scan::More);
    }

    #[test]
    fn response_status_and_deflate() {
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n\x81\x00";
        let (n, r, s) = scan(side::RESPONSE, resp);
        assert_eq!((r, s.status), (Scan::Done, 101));
        assert_eq!(n, resp.len() - 2);
        assert!(s.found());
        let (_, r, s) = scan(side::RESPONSE, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert_eq!((r, s.status, s.found()), (Scan::Done, 400, false));
        assert_eq!(scan(side::RESPONSE, b"HTTX/1.1 101").1, Scan::NotHttp);
    }

    #[test]
    fn every_split_point_gives_the_same_answer() {
        for cut in 0..=UPGRADE.len() {
            let mut s = HttpScan::new(side::REQUEST);
            let (a, r1) = s.feed(&UPGRADE[..cut]);
            assert_eq!(a, cut);
            assert_eq!(r1, if cut == UPGRADE.len() { Scan::Done } else { Scan::More });
            if cut < UPGRADE.len() {
                let (b, r2) = s.feed(&UPGRADE[cut..]);
                assert_eq!((a + b, r2), (UPGRADE.len(), Scan::Done));
            }
            assert!(s.found(), "cut at {cut}");
        }
    }

    #[test]
    fn overlong_head_gives_up() {
        let mut s = HttpScan::new(side::REQUEST);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD as usize + 10, b'a');
        assert_eq!(s.feed(&big).1, Scan::NotHttp);
    }
}
