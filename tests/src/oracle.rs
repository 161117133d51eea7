//! Independent frame accounting of a captured byte stream with tungstenite's header parser,
//! in the shape of the snapshot's `websocket` fields.

use std::{collections::BTreeMap, io::Cursor};

use serde_json::{json, Value};
use tungstenite::protocol::frame::{
    coding::{Control, Data, OpCode},
    FrameHeader,
};

#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// (opcode name, fin, payload length) per frame.
    pub frames: Vec<(&'static str, bool, u64)>,
    pub close_codes: BTreeMap<String, u64>,
}

impl Counts {
    pub fn by_opcode(&self) -> Value {
        let n = |name: &str| self.frames.iter().filter(|f| f.0 == name).count();
        json!({"text": n("text"), "binary": n("binary"), "continuation": n("continuation"),
               "ping": n("ping"), "pong": n("pong"), "close": n("close")})
    }
    pub fn messages(&self) -> u64 {
        self.frames.iter().filter(|f| f.1 && matches!(f.0, "text" | "binary" | "continuation")).count() as u64
    }
    pub fn payload_bytes(&self) -> u64 {
        self.frames.iter().map(|f| f.2).sum()
    }
    pub fn add(&mut self, o: &Counts) {
        self.frames.extend(o.frames.iter().cloned());
        for (k, v) in &o.close_codes {
            *self.close_codes.entry(k.clone()).or_default() += v;
        }
    }
}

fn name(op: OpCode) -> &'static str {
    match op {
        OpCode::Data(Data::Text) => "text",
        OpCode::Data(Data::Binary) => "binary",
        OpCode::Data(Data::Continue) => "continuation",
        OpCode::Control(Control::Ping) => "ping",
        OpCode::Control(Control::Pong) => "pong",
        OpCode::Control(Control::Close) => "close",
        _ => "reserved",
    }
}

/// Decode every complete frame in `bytes`.
pub fn decode(bytes: &[u8]) -> Counts {
    let mut c = Counts::default();
    let mut cur = Cursor::new(bytes);
    loop {
        let start = cur.position() as usize;
        let Ok(Some((h, len))) = FrameHeader::parse(&mut cur) else { break };
        let body = cur.position() as usize;
        if body as u64 + len > bytes.len() as u64 {
            cur.set_position(start as u64);
            break;
        }
        let n = name(h.opcode);
        if n == "close" {
            let code = if len >= 2 {
                let mut b = [bytes[body], bytes[body + 1]];
                if let Some(m) = h.mask {
                    b[0] ^= m[0];
                    b[1] ^= m[1];
                }
                u16::from_be_bytes(b)
            } else {
                1005
            };
            *c.close_codes.entry(code.to_string()).or_default() += 1;
        }
        c.frames.push((n, h.is_final, len));
        cur.set_position(body as u64 + len);
    }
    c
}
