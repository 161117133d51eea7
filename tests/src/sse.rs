//! Server-Sent Events for the privileged tests: the real, unmodified SSE servers
//! (tests/servers/sse_*), the script they play (carried in the query string), a raw-TCP client
//! that records every byte that arrived, and an oracle written apart from wsguard's scanner that
//! turns recorded bytes into the snapshot's `sse` numbers. The oracle works on whole buffers
//! (de-chunk everything, then split everything into lines), never streaming, so that it is
//! obviously right; the WHATWG event-stream rules it follows are quoted where they apply.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::{go_build, repo_root, scaled, Server};

impl Server {
    /// node's own `http` module, chunked responses (tests/servers/sse_node.js).
    pub fn sse_node() -> Result<Server> {
        let mut cmd = Command::new("node");
        cmd.arg(repo_root().join("tests/servers/sse_node.js")).arg("0");
        Self::spawn(cmd)
    }

    /// aiohttp's `StreamResponse` (PyPI, tests/servers/requirements.txt).
    pub fn sse_aiohttp() -> Result<Server> {
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/servers/sse_aiohttp.py")).arg("0");
        Self::spawn(cmd)
    }

    /// Go's `net/http` with `http.Flusher` (and a hijacked raw-chunked mode), Debian's golang.
    pub fn sse_go() -> Result<Server> {
        Self::spawn(Command::new(go_build("sse_go")?))
    }
}

/// How the stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The server ends the response after the body (chunked terminator, or it closes).
    Server,
    /// The client goes away (FIN) once the whole body arrived; the server held the stream open.
    ClientFin,
    /// The client aborts with RST once the whole body arrived.
    ClientReset,
}

/// Where the server cuts the body into separately flushed writes.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// One write.
    Whole,
    /// Inside every `data` field name, between every CR and LF, after every line end: the
    /// splits a scanner gets wrong if it keeps no state across writes.
    Adversarial,
    /// Pseudo-random cut points from this seed.
    Random(u64),
    /// Every byte its own write (keep the body short: writes are ~2 ms apart).
    Bytes,
}

/// What one stream plays.
#[derive(Clone, Debug)]
pub struct Script {
    pub body: Vec<u8>,
    pub cut: Cut,
    pub end: End,
    /// Go server only: it writes the chunked framing itself, splitting chunk headers too.
    pub raw_chunks: bool,
    /// node only: no chunked encoding, the body runs until the server closes.
    pub identity: bool,
    /// Sent as `Last-Event-ID` (a reconnect that resumes).
    pub last_event_id: Option<String>,
}

impl Script {
    pub fn new(body: &[u8], cut: Cut, end: End) -> Script {
        Script { body: body.to_vec(), cut, end, raw_chunks: false, identity: false, last_event_id: None }
    }

    pub fn resuming(mut self, id: &str) -> Script {
        self.last_event_id = Some(id.to_owned());
        self
    }

    pub fn cuts(&self) -> Vec<usize> {
        let b = &self.body;
        match self.cut {
            Cut::Whole => Vec::new(),
            Cut::Bytes => (1..b.len()).collect(),
            Cut::Adversarial => {
                let mut c = Vec::new();
                for i in 0..b.len() {
                    if b[i..].starts_with(b"data") {
                        c.push(i + 2);
                    }
                    if b[i] == b'\n' || (b[i] == b'\r' && b.get(i + 1) != Some(&b'\n')) {
                        c.push(i + 1);
                    }
                    if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
                        c.push(i + 1);
                    }
                }
                c.retain(|&x| x < b.len());
                c.dedup();
                c
            }
            Cut::Random(seed) => {
                let mut x = seed | 1;
                let mut c = Vec::new();
                let mut pos = 0;
                loop {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    pos += 1 + (x % 23) as usize;
                    if pos >= b.len() {
                        return c;
                    }
                    c.push(pos);
                }
            }
        }
    }

    /// The request target: the script in the query string (see tests/servers/sse_node.js).
    pub fn target(&self) -> String {
        let hex: String = self.body.iter().map(|b| format!("{b:02x}")).collect();
        // Every byte its own write is `cuts=every`: listing each offset would make a request head
        // longer than the 8 KiB the probe follows (`MAX_HEAD`), and the stream would rightly be
        // not followed at all.
        let cuts = match self.cut {
            Cut::Bytes => "every".to_owned(),
            _ => self.cuts().iter().map(usize::to_string).collect::<Vec<_>>().join(","),
        };
        let end = if self.end == End::Server { "server" } else { "client" };
        let mut t = format!("/events?b={hex}&cuts={cuts}&end={end}");
        if self.raw_chunks {
            t.push_str("&raw=1");
        }
        if self.identity {
            t.push_str("&te=identity");
        }
        t
    }
}

/// One stream as the client saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub head: String,
    /// Every byte after the response head, as it arrived.
    pub received: Vec<u8>,
    pub end: End,
    pub resumed: bool,
}

/// A raw TCP client that speaks just enough HTTP/1.1 to open a stream (no SSE library).
pub struct SseClient {
    pub stream: TcpStream,
    pub head: String,
    pub received: Vec<u8>,
    script: Script,
}

impl SseClient {
    /// Send the request and read the response head; fails unless it is a 200 event stream.
    pub fn open(port: u16, script: &Script) -> Result<SseClient> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        let resume = script.last_event_id.as_ref().map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{resume}\r\n",
            script.target()
        );
        stream.write_all(req.as_bytes())?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut c = SseClient { stream, head: String::new(), received: Vec::new(), script: script.clone() };
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        loop {
            if let Some(i) = c.received.windows(4).position(|w| w == b"\r\n\r\n") {
                c.head = String::from_utf8_lossy(&c.received[..i]).into_owned();
                c.received.drain(..i + 4);
                break;
            }
            if !c.read_some(deadline)? {
                bail!("connection closed before the response head: {:?}", String::from_utf8_lossy(&c.received));
            }
        }
        let lower = c.head.to_ascii_lowercase();
        if !lower.starts_with("http/1.1 200") || !lower.contains("content-type: text/event-stream") {
            bail!("not an event stream: {}", c.head);
        }
        Ok(c)
    }

    /// One read into `received`; false at EOF. Errors past `deadline`.
    fn read_some(&mut self, deadline: Instant) -> Result<bool> {
        let mut buf = [0u8; 65536];
        match self.stream.read(&mut buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.received.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if Instant::now() > deadline {
                    bail!("timed out: {} bytes after the head", self.received.len());
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Read until the whole script body arrived (and, when the server ends, its end).
    pub fn read_script(&mut self) -> Result<()> {
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        let chunked = is_chunked(&self.head);
        loop {
            let (body, done) = if chunked { dechunk(&self.received) } else { (self.received.clone(), false) };
            let have_body = body.len() >= self.script.body.len();
            if have_body && (self.script.end != End::Server || done) {
                return Ok(());
            }
            if !self.read_some(deadline)? {
                if have_body && self.script.end == End::Server {
                    return Ok(()); // unchunked: the server closed
                }
                bail!("server closed after {} of {} body bytes", body.len(), self.script.body.len());
            }
        }
    }

    /// End our side as the script says and hand back what arrived.
    pub fn finish(self) -> Result<Recorded> {
        let rec = Recorded {
            head: self.head.clone(),
            received: self.received.clone(),
            end: self.script.end,
            resumed: self.script.last_event_id.is_some(),
        };
        if self.script.end == End::ClientReset {
            crate::reset_on_close(&self.stream);
        } else {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        Ok(rec)
    }

    /// Open, read the whole script, end: one stream start to finish.
    pub fn run(port: u16, script: &Script) -> Result<Recorded> {
        let mut c = SseClient::open(port, script)?;
        c.read_script()?;
        c.finish()
    }
}

fn is_chunked(head: &str) -> bool {
    head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    })
}

/// Remove HTTP/1.1 chunked framing from a whole buffer: the body, and whether the terminating
/// zero-size chunk was seen. A chunk cut short by the buffer's end contributes what arrived.
pub fn dechunk(bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = bytes[pos..].windows(2).position(|w| w == b"\r\n") else { return (body, false) };
        let line = std::str::from_utf8(&bytes[pos..pos + eol]).unwrap_or("");
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else { return (body, false) };
        pos += eol + 2;
        if size == 0 {
            return (body, true);
        }
        let end = (pos + size).min(bytes.len());
        body.extend_from_slice(&bytes[pos..end]);
        pos = end + 2;
        if pos > bytes.len() {
            return (body, false);
        }
    }
}

/// What the event-stream parser of a browser would make of one stream's body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub events: u64,
    pub comments: u64,
    pub bytes: u64,
}

/// Count events and comments in a whole body per the WHATWG rules: lines end in CRLF, LF or
/// CR; a leading U+FEFF BOM is skipped; a line starting with `:` is a comment; an empty line
/// dispatches the event if its data buffer is not empty, and every `data` field (even with an
/// empty value) appends a LF to that buffer, so "a block carrying a `data` field" is an event;
/// a field named anything else (`event`, `id`, `retry`, `Data`, `datax`) is not data. A last
/// line without its line end, and a block not ended by an empty line, are never dispatched.
pub fn scan(body: &[u8]) -> Scan {
    let mut s = Scan { bytes: body.len() as u64, ..Scan::default() };
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut lines: Vec<&[u8]> = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < text.len() {
        match text[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                i += if text.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                start = i;
            }
            _ => i += 1,
        }
    }
    let mut has_data = false;
    for line in lines {
        if line.is_empty() {
            if has_data {
                s.events += 1;
            }
            has_data = false;
        } else if line[0] == b':' {
            s.comments += 1;
        } else if line.split(|&b| b == b':').next() == Some(b"data") {
            has_data = true;
        }
    }
    s
}

impl Recorded {
    /// The event-stream body the client's parser read (chunked framing removed).
    pub fn body(&self) -> Vec<u8> {
        if is_chunked(&self.head) {
            dechunk(&self.received).0
        } else {
            self.received.clone()
        }
    }
}

/// The `sse` object of a process that served exactly `streams`, all of them closed.
pub fn expected(streams: &[Recorded]) -> Value {
    let n = |f: &dyn Fn(&Recorded) -> bool| streams.iter().filter(|r| f(r)).count() as u64;
    let scans: Vec<Scan> = streams.iter().map(|r| scan(&r.body())).collect();
    json!({
        "streams_opened": streams.len(),
        "streams_active": 0,
        "streams_closed": streams.len(),
        "events_sent": scans.iter().map(|s| s.events).sum::<u64>(),
        "comments_sent": scans.iter().map(|s| s.comments).sum::<u64>(),
        "payload_bytes_sent": scans.iter().map(|s| s.bytes).sum::<u64>(),
        "resumed_streams": n(&|r| r.resumed),
        "closed_by_client": n(&|r| r.end != End::Server),
        "closed_by_server": n(&|r| r.end == End::Server),
        "unparseable_streams": 0,
        "out_of_sync": 0,
    })
}

/// Check every field of `expected` (see [`expected`]) against the agent's `sse` object.
pub fn assert_sse(what: &str, sse: &Value, expected: &Value) {
    for (k, v) in expected.as_object().expect("object") {
        assert_eq!(&sse[k], v, "{what}: sse.{k}: agent {sse:#}, oracle {expected:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_follows_the_whatwg_rules() {
        let s = scan(b"\xEF\xBB\xBFdata: a\r\n\r\n: c\rdata\r\rid: 3\nevent: x\n\n\ndata:b\ndata:c\n\nDATA: no\n\ndatax: no\n\n: end\ndata: pending\n");
        assert_eq!((s.events, s.comments), (3, 2));
        assert_eq!(s.bytes, 97);
        assert_eq!(scan(b"data: x\n\ndata: never\n\n:"), Scan { events: 2, comments: 0, bytes: 23 });
        assert_eq!(scan(b"data: x").events, 0);
    }

    #[test]
    fn dechunk_removes_framing() {
        assert_eq!(dechunk(b"3\r\nabc\r\n1;x=y\r\n\n\r\n0\r\n\r\n"), (b"abc\n".to_vec(), true));
        assert_eq!(dechunk(b"5\r\nab"), (b"ab".to_vec(), false));
        assert_eq!(dechunk(b"a\r\n0123456789\r\n"), (b"0123456789".to_vec(), false));
    }

    #[test]
    fn adversarial_cuts_split_data_and_crlf() {
        let s = Script::new(b"data: x\r\n\r\n", Cut::Adversarial, End::Server);
        assert_eq!(s.cuts(), vec![2, 8, 9, 10]);
    }
}
