//! Property tests of the upgrade-handshake scanner (`wsguard_common::http`): heads generated from
//! a model (random header names and values, case, spacing, CRLF or LF, tokens inside lists,
//! near-miss names such as `X-Upgrade:` or `Upgrade-Insecure-Requests:`), followed by frame
//! bytes, cut at random points. The verdict, consumed count, found flag and status must equal
//! the model's, whole and cut.

use proptest::prelude::*;
use proptest::sample::Index;
use wsguard_common::frame::WINDOW;
use wsguard_common::http::{side, HttpScan, Scan};

#[derive(Clone, Debug)]
struct Head {
    side: u8,
    method: &'static str,
    status: u16,
    headers: Vec<(String, String, String)>, // name, spacing after the colon, value
    lf_only: bool,
    tail: Vec<u8>,
}

impl Head {
    fn bytes(&self) -> (Vec<u8>, usize) {
        let eol = if self.lf_only { "\n" } else { "\r\n" };
        let mut s = String::new();
        if self.side == side::REQUEST {
            s.push_str(&format!("{} /chat?x=websocket HTTP/1.1{eol}", self.method));
        } else {
            s.push_str(&format!("HTTP/1.1 {:03} Whatever Reason{eol}", self.status));
        }
        for (n, sp, v) in &self.headers {
            s.push_str(&format!("{n}:{sp}{v}{eol}"));
        }
        s.push_str(eol);
        let head_len = s.len();
        let mut b = s.into_bytes();
        b.extend_from_slice(&self.tail);
        (b, head_len)
    }

    /// (consumed, verdict, found, status) from the model.
    fn truth(&self) -> (usize, Scan, bool, u16) {
        let (b, head_len) = self.bytes();
        if self.side == side::REQUEST {
            if let Some(i) = (0..4).find(|&i| b[i] != b"GET "[i]) {
                return (i + 1, Scan::NotHttp, false, 0);
            }
        }
        let (want_name, token) = if self.side == side::REQUEST {
            ("upgrade", "websocket")
        } else {
            ("sec-websocket-extensions", "permessage-deflate")
        };
        let found =
            self.headers.iter().any(|(n, _, v)| n.eq_ignore_ascii_case(want_name) && v.to_ascii_lowercase().contains(token));
        let status = if self.side == side::RESPONSE { self.status } else { 0 };
        (head_len, Scan::Done, found, status)
    }
}

fn value() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-zA-Z0-9=;,. -]{0,6}",
        1 => prop::sample::select(vec![
            "websocket", "WebSocket", "WEBSOCKET", "websocke", "webwebsocket", "websockesocket", "h2c",
            "permessage-deflate", "Permessage-Deflate", "permessage-deflat", "ppermessage-deflate",
            "x-webkit-deflate-frame", "client_max_window_bits", "Upgrade: websocket",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..4).prop_map(|v| v.concat().trim_end().to_string())
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "Upgrade", "upgrade", "UPGRADE", "uPgRaDe", "X-Upgrade", "Upgrade-Insecure-Requests", "Upgrad",
            "Sec-WebSocket-Extensions", "sec-websocket-extensions", "Sec-WebSocket-Extension",
            "Sec-WebSocket-Extensions-X", "Connection", "Host", "Sec-WebSocket-Key",
        ])
        .prop_map(String::from),
        1 => "[A-Za-z][A-Za-z0-9-]{0,30}",
    ]
}

fn head() -> impl Strategy<Value = Head> {
    (
        prop::bool::ANY.prop_map(|r| if r { side::RESPONSE } else { side::REQUEST }),
        prop::sample::select(vec!["GET", "GET", "GET", "POST", "get", "GETS"]),
        prop_oneof![Just(101u16), Just(400u16), 100u16..1000],
        prop::collection::vec((name(), prop::sample::select(vec!["", " ", "  ", "\t"]).prop_map(String::from), value()), 0..10),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(side, method, status, headers, lf_only, tail)| Head { side, method, status, headers, lf_only, tail })
}

fn scan_cut(side: u8, data: &[u8], cuts: &[usize]) -> (usize, Scan, bool, u16) {
    let mut s = HttpScan::new(side);
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        let (n, v) = s.feed(&data[start..end]);
        if v != Scan::More {
            return (start + n, v, s.found(), s.status);
        }
        assert_eq!(n, end - start);
        start = end;
    }
    (data.len(), Scan::More, s.found(), s.status)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn head_verdict_matches_model_whole_and_cut(
        h in head(),
        random in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let (data, _) = h.bytes();
        let want = h.truth();
        prop_assert_eq!(scan_cut(h.side, &data, &[]), want);
        let mut cuts: Vec<usize> = random.iter().map(|i| i.index(data.len())).filter(|&c| c > 0).collect();
        cuts.sort_unstable();
        cuts.dedup();
        prop_assert_eq!(scan_cut(h.side, &data, &cuts), want, "cuts {:?}", cuts);
    }

    /// `consume` on windows of any length, with bytes after the length that would end the head.
    #[test]
    fn window_by_window_matches_model(h in head(), lens in prop::collection::vec(1usize..=WINDOW, 1..8)) {
        let (data, _) = h.bytes();
        let mut s = HttpScan::new(h.side);
        let mut pos = 0;
        let mut i = 0;
        let mut got = None;
        while pos < data.len() {
            let n = lens[i % lens.len()].min(data.len() - pos);
            i += 1;
            let mut win = [b'\n'; WINDOW];
            win[..n].copy_from_slice(&data[pos..pos + n]);
            let (used, v) = s.consume(&win, n);
            pos += used;
            if v != Scan::More {
                got = Some((pos, v, s.found(), s.status));
                break;
            }
            prop_assert_eq!(used, n);
        }
        prop_assert_eq!(got.unwrap_or((pos, Scan::More, s.found(), s.status)), h.truth());
    }

    /// Random bytes never panic, and whole == cut.
    #[test]
    fn random_bytes_whole_equals_cut(
        side in 0u8..2,
        data in prop::collection::vec(any::<u8>(), 0..300),
        random in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let whole = scan_cut(side, &data, &[]);
        let mut cuts: Vec<usize> = random.iter().map(|i| i.index(data.len().max(1))).filter(|&c| c > 0).collect();
        cuts.sort_unstable();
        cuts.dedup();
        prop_assert_eq!(scan_cut(side, &data, &cuts), whole);
    }
}
