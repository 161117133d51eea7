//! Walks the bytes one syscall moved — a flat buffer or an iovec array — through the handshake
//! scanner or the frame parser, with `bpf_loop` so a 64 KiB read of thousands of tiny frames is
//! followed to the end. Payloads are skipped arithmetically (and counted as they are skipped);
//! only headers (and close codes) are copied from user memory, at most 16 bytes at a time.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::map,
    maps::PerCpuArray,
};
use wsguard_common::{
    clientkey::{KeyConfig, KeyScan},
    frame::{opcode, DirCounters, FrameHeader, FrameState, Sink, WINDOW},
    http::{HttpScan, Scan},
    sse::{Body, SseBody, SseDelta, SseHead},
};

/// Most steps one syscall may take (one step = a header, a skipped payload run, one byte of an
/// HTTP head, or an iovec). Past this the connection is marked out of sync rather than guessed.
pub const STEP_BUDGET: u32 = 1 << 18;
/// Most iovecs followed per syscall (Linux's `UIO_MAXIOV`).
pub const MAX_IOV: u64 = 1024;

pub mod mode {
    pub const HTTP: u8 = 1;
    pub const FRAMES: u8 = 2;
    /// The response head of a plain request, one byte per step (`sse.rs`).
    pub const SSE_HEAD: u8 = 3;
    /// An SSE stream's body, one byte per step (a whole window per step did not pass the
    /// verifier in reasonable time: see docs/architecture.md).
    pub const SSE_BODY: u8 = 4;
}

pub mod verdict {
    /// Still walking, or all bytes consumed.
    pub const NONE: u8 = 0;
    /// The HTTP head ended (bytes after it are still unwalked).
    pub const HTTP_DONE: u8 = 1;
    pub const NOT_HTTP: u8 = 2;
    pub const DESYNC: u8 = 3;
    pub const FAULT: u8 = 4;
    /// The chunked terminator ended an SSE stream (bytes after it are still unwalked).
    pub const SSE_ENDED: u8 = 5;
}

/// What frames showed during one syscall, applied to the connection afterwards.
pub mod saw {
    pub const PING: u8 = 1;
    pub const PONG: u8 = 2;
    pub const DATA: u8 = 4;
    pub const FIN_DATA: u8 = 8;
    pub const CLOSE: u8 = 16;
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Acc {
    pub delta: DirCounters,
    /// Last close code seen (0 = none).
    pub close_code: u16,
    pub saw: u8,
    pub _pad: [u8; 5],
}

impl Sink for Acc {
    #[inline(always)]
    fn frame(&mut self, h: &FrameHeader) {
        self.delta.record(h);
        self.saw |= match h.opcode {
            opcode::PING => saw::PING,
            opcode::PONG => saw::PONG,
            opcode::CLOSE => saw::CLOSE,
            _ if h.fin => saw::DATA | saw::FIN_DATA,
            _ => saw::DATA,
        };
    }
    #[inline(always)]
    fn close_code(&mut self, code: u16) {
        self.close_code = code;
    }
    #[inline(always)]
    fn payload(&mut self, n: u64) {
        self.delta.payload(n);
    }
}

/// State of one syscall's walk. It lives in a per-CPU map value, not on the stack: the verifier
/// does not track map contents field by field, so the `bpf_loop` callback converges after a
/// couple of passes instead of exploring every combination of precise stack values.
#[repr(C)]
pub struct Walk {
    pub seg: u64,
    pub seg_left: u64,
    pub iov: u64,
    pub total_left: u64,
    pub iov_left: u32,
    pub mode: u8,
    pub verdict: u8,
    /// HTTP mode scans one byte per step from `win`, refilled 16 bytes at a time.
    pub head_len: u8,
    pub head_pos: u8,
    pub fs: FrameState,
    pub http: HttpScan,
    pub acc: Acc,
    pub win: [u8; WINDOW],
    /// Client-key capture, on request bytes only (`want_key`).
    pub key: KeyScan,
    pub kcfg: KeyConfig,
    pub want_key: u8,
    /// Request bytes also go through the SSE head scanner (`Last-Event-ID`).
    pub want_sse: u8,
    pub sse_head: SseHead,
    pub sse_body: SseBody,
    pub sse_delta: SseDelta,
}

#[map]
static WSG_WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's walk state, set up for `total` bytes at `buf` (flat) or spread over the iovec
/// array at `iov` with `cnt` entries.
#[inline(always)]
pub fn begin(buf: u64, iov: u64, cnt: u64, total: u64) -> Option<&'static mut Walk> {
    // SAFETY: per-CPU value; BPF programs are not preempted while they run on this CPU.
    let w = unsafe { &mut *WSG_WALK.get_ptr_mut(0)? };
    w.seg = buf;
    w.seg_left = if iov == 0 { total } else { 0 };
    w.iov = iov;
    w.iov_left = if cnt > MAX_IOV { MAX_IOV as u32 } else { cnt as u32 };
    w.total_left = total;
    w.head_len = 0;
    w.head_pos = 0;
    crate::copy::zero(&mut w.acc);
    w.want_key = 0;
    w.want_sse = 0;
    Some(w)
}

impl Walk {
    /// Run in `m` until the bytes are used up or a verdict stops it. Returns false if the step
    /// budget ran out with bytes left.
    #[inline(always)]
    pub fn run(&mut self, m: u8) -> bool {
        self.mode = m;
        self.verdict = verdict::NONE;
        let mut unused = 0u64;
        // SAFETY: `step` has the callback signature bpf_loop expects; it finds its state in
        // WSG_WALK, so the context is a dummy stack slot.
        unsafe {
            generated::bpf_loop(STEP_BUDGET, step as *mut c_void, &mut unused as *mut u64 as *mut c_void, 0);
        }
        !(self.verdict == verdict::NONE && self.total_left > 0 && (self.seg_left > 0 || self.iov_left > 0))
    }

    #[inline(always)]
    fn advance(&mut self, n: u64) {
        self.seg += n;
        self.seg_left -= n;
        self.total_left -= n;
    }

    /// Copy up to 16 bytes at the current position into `win`; returns how many.
    #[inline(always)]
    fn fill(&mut self) -> Option<usize> {
        let mut n = self.seg_left;
        if n > WINDOW as u64 {
            n = WINDOW as u64;
        }
        // Read into the stack, then copy: the kernel's usercopy hardening checks the destination
        // of every user read, and a stack slot is checked for less than a map value.
        let mut tmp = [0u64; 2];
        // SAFETY: the helper checks the user address; n <= 16 = tmp's size.
        let rc = unsafe { generated::bpf_probe_read_user(tmp.as_mut_ptr() as *mut c_void, n as u32, self.seg as *const c_void) };
        if rc != 0 {
            self.verdict = verdict::FAULT;
            return None;
        }
        let w = self.win.as_mut_ptr() as *mut u64;
        // SAFETY: win is 16 bytes, 8-aligned (after the u64 fields of Walk and 8-byte groups).
        unsafe {
            core::ptr::write_volatile(w, tmp[0]);
            core::ptr::write_volatile(w.add(1), tmp[1]);
        }
        Some(n as usize)
    }
}

/// One step of the walk: 0 = continue, 1 = stop.
#[inline(never)]
extern "C" fn step(_index: u64, ctx: *mut c_void) -> i64 {
    let _ = ctx;
    // SAFETY: per-CPU value, see `begin`.
    let Some(w) = WSG_WALK.get_ptr_mut(0) else { return 1 };
    let w = unsafe { &mut *w };
    if w.total_left == 0 {
        return 1;
    }
    if w.seg_left == 0 {
        if w.iov_left == 0 {
            return 1;
        }
        // SAFETY: user pointer read through the helper.
        let Ok(v) = (unsafe { bpf_probe_read_user(w.iov as *const [u64; 2]) }) else {
            w.verdict = verdict::FAULT;
            return 1;
        };
        w.iov += 16;
        w.iov_left -= 1;
        w.head_len = 0;
        w.head_pos = 0;
        w.seg = v[0];
        w.seg_left = if v[1] < w.total_left { v[1] } else { w.total_left };
        return 0;
    }
    if w.mode == mode::FRAMES {
        let skip = w.fs.skippable();
        if skip > 0 {
            let n = if skip < w.seg_left { skip } else { w.seg_left };
            w.fs.skip(n, &mut w.acc);
            w.advance(n);
            return (w.total_left == 0) as i64;
        }
        let Some(n) = w.fill() else { return 1 };
        match w.fs.consume(&w.win, n, &mut w.acc) {
            Ok(used) => {
                w.advance(used as u64);
                // Skip the payload of the frame just decoded in the same step (one callback
                // per frame instead of two); a close code is read in the next step.
                let skip = w.fs.skippable();
                if skip > 0 && w.seg_left > 0 {
                    let n = if skip < w.seg_left { skip } else { w.seg_left };
                    w.fs.skip(n, &mut w.acc);
                    w.advance(n);
                }
                // Done with this syscall's bytes: stop now rather than in one more callback.
                (w.total_left == 0) as i64
            }
            Err(_) => {
                w.verdict = verdict::DESYNC;
                1
            }
        }
    } else {
        if w.head_pos >= w.head_len {
            let Some(n) = w.fill() else { return 1 };
            w.head_len = n as u8;
            w.head_pos = 0;
        }
        let b = w.win[(w.head_pos as usize) & (WINDOW - 1)];
        w.head_pos += 1;
        w.advance(1);
        if w.want_key != 0 {
            w.key.byte(&w.kcfg, b);
        }
        if w.mode == mode::SSE_BODY {
            return match w.sse_body.byte(b, &mut w.sse_delta) {
                Body::More => (w.total_left == 0) as i64,
                Body::Ended => {
                    w.verdict = verdict::SSE_ENDED;
                    1
                }
                Body::Bad => {
                    w.verdict = verdict::DESYNC;
                    1
                }
            };
        }
        let r = if w.mode == mode::SSE_HEAD {
            w.sse_head.byte(b)
        } else {
            if w.want_sse != 0 {
                let _ = w.sse_head.byte(b);
            }
            w.http.byte(b)
        };
        match r {
            Scan::More => 0,
            Scan::Done => {
                w.verdict = verdict::HTTP_DONE;
                1
            }
            Scan::NotHttp => {
                w.verdict = verdict::NOT_HTTP;
                1
            }
        }
    }
}
