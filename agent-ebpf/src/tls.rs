//! TLS in the socket mode: a connection whose first bytes are a TLS record is marked `TLS` in its
//! socket storage (its ciphertext is never parsed, and it is never counted as not WebSocket or as
//! a failed handshake); its plaintext is read from OpenSSL's own calls (uprobes on `SSL_read`,
//! `SSL_read_ex`, `SSL_write`, `SSL_write_ex`, `SSL_free`) and fed to the same handshake, frame
//! parser and counters as a plain connection (`lifecycle::on_data`), in a state of its own keyed
//! by the socket's cookie (`WSG_TLS_CONN`), which `tcp_destroy_sock` ends like any connection.
//!
//! A uprobe sees an `SSL*`, not a socket (and has no BTF socket pointer for the socket's
//! storage), so `SSL*` and socket are paired through the tracepoints that do see the socket, on
//! the same thread (`WSG_TLS_THREAD`, one record per thread):
//! * **In the call** (OpenSSL does its own socket I/O: Python's blocking `ssl` sockets, nginx):
//!   while a thread is inside `SSL_read`/`SSL_write` of `ssl`, a read or write it makes on a TLS
//!   socket is that `SSL`'s socket. Always right, so it also replaces an older link.
//! * **The read before the call** (memory BIOs: Node's `TLSWrap`, Python's asyncio `SSLObject`):
//!   the ciphertext is read from the socket by the event loop, handed to OpenSSL, and `SSL_read`
//!   runs on the same thread right after, in the same callback; so an `SSL` that is not linked yet
//!   takes the socket of the thread's last TLS socket read when its first `SSL_read` returns
//!   plaintext, unless that socket is already linked to another live `SSL`. Writes never link this
//!   way: a server writes only after it read a request, so its `SSL` is linked by then.
//!
//! `SSL_free` drops the link (an `SSL*` may be reused for a later connection). Plaintext is
//! counted when the call returns, with the length it returned (`SSL_read_ex`/`SSL_write_ex`: the
//! `readbytes`/`written` out-parameter), so a retried or failed call is never counted twice.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_socket_cookie},
    macros::map,
    maps::{HashMap, LruHashMap},
};
use wsguard_common::{
    conn::{phase, ConnKey, ConnState},
    stats::global,
};

use crate::{
    lifecycle,
    maps::{bump, WSG_INIT_CONN},
    record::Dir,
};

wsguard_common::named!(WSG_TLS_THREAD = TLS_THREAD, WSG_TLS_SSL = TLS_SSL, WSG_TLS_LINK = TLS_LINK, WSG_TLS_CONN = TLS_CONN);

/// One thread's OpenSSL call in progress and its last TLS socket read.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsThread {
    /// `SSL*` of the call in progress.
    pub ssl: u64,
    /// Its plaintext buffer.
    pub buf: u64,
    /// `SSL_read_ex`/`SSL_write_ex`: where the length is written (0: the return value is it).
    pub len_out: u64,
    /// Cookie of the last TLS socket this thread read (0: none).
    pub last_rx: u64,
    /// A call is in progress.
    pub in_call: u8,
    /// Its direction (0 read, 1 write).
    pub tx: u8,
    pub _pad: [u8; 6],
}

#[map]
static WSG_TLS_THREAD: LruHashMap<u64, TlsThread> = LruHashMap::with_max_entries(16384, 0);
/// `SSL*` → socket cookie.
#[map]
static WSG_TLS_SSL: HashMap<u64, u64> = HashMap::with_max_entries(65536, 0);
/// Socket cookie → `SSL*` (so a socket is linked to one live `SSL` at a time).
#[map]
static WSG_TLS_LINK: HashMap<u64, u64> = HashMap::with_max_entries(65536, 0);
/// Socket cookie → the plaintext's connection state (created when the socket turns out TLS).
#[map]
static WSG_TLS_CONN: HashMap<u64, ConnState> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_ANY: u64 = 0;

/// The first bytes a connection read (a flat buffer, or `cnt` iovecs at `iov`): a TLS handshake
/// record (content type 22, version 3.x)? An HTTP request never starts with byte 22.
#[inline(never)]
pub fn client_hello(buf: u64, iov: u64, cnt: u64) -> bool {
    let mut base = buf;
    if cnt != 0 {
        // SAFETY: reads user memory through the helper; a fault is an error.
        match unsafe { bpf_probe_read_user(iov as *const u64) } {
            Ok(b) => base = b,
            Err(_) => return false,
        }
    }
    // SAFETY: as above (the syscall moved at least one byte; a short buffer faults, not guessed).
    match unsafe { bpf_probe_read_user(base as *const [u8; 3]) } {
        Ok(h) => h[0] == 22 && h[1] == 3 && h[2] <= 4,
        Err(_) => false,
    }
}

/// I/O on a socket marked TLS (`c` is its storage): its ciphertext is not parsed. Creates the
/// plaintext's state at the first such I/O, notes the thread's last TLS read, and links the
/// `SSL` whose call the thread is in.
#[inline(never)]
pub fn on_sock(sk: *mut c_void, c: &ConnState, dir: Dir) {
    // SAFETY: the tracepoint's own socket, passed only to the helper.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    if WSG_TLS_CONN.get_ptr(&cookie).is_none() && !new_conn(cookie, c) {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    let t = match WSG_TLS_THREAD.get_ptr_mut(&id) {
        Some(t) => t,
        None if dir == Dir::Rx => {
            let zero = TlsThread { ssl: 0, buf: 0, len_out: 0, last_rx: cookie, in_call: 0, tx: 0, _pad: [0; 6] };
            let _ = WSG_TLS_THREAD.insert(&id, &zero, BPF_ANY);
            return;
        }
        None => return,
    };
    // SAFETY: this thread's record (only this thread writes it).
    let t = unsafe { &mut *t };
    if dir == Dir::Rx {
        t.last_rx = cookie;
    }
    if t.in_call != 0 && t.ssl != 0 {
        link(t.ssl, cookie);
    }
}

/// The plaintext's state of a socket that turned out TLS: zeroed, with the socket's identity.
#[inline(never)]
fn new_conn(cookie: u64, c: &ConnState) -> bool {
    let Some(init) = WSG_INIT_CONN.get_ptr_mut(0) else { return false };
    // SAFETY: per-CPU template, only id and accepted_ns are ever written (see sock.rs).
    let init = unsafe { &mut *init };
    init.id = c.id;
    init.accepted_ns = c.accepted_ns;
    if WSG_TLS_CONN.insert(&cookie, init, BPF_ANY).is_err() {
        bump(global::TLS_MAP_FULL);
        return false;
    }
    let Some(p) = WSG_TLS_CONN.get_ptr_mut(&cookie) else { return false };
    // SAFETY: map value.
    let p = unsafe { &mut *p };
    p.tgid = c.tgid;
    p.fd = c.fd;
    true
}

#[inline(always)]
fn link(ssl: u64, cookie: u64) {
    if WSG_TLS_SSL.get_ptr(&ssl).is_some_and(|k| unsafe { *k } == cookie) {
        return;
    }
    if WSG_TLS_SSL.insert(&ssl, &cookie, BPF_ANY).is_err() || WSG_TLS_LINK.insert(&cookie, &ssl, BPF_ANY).is_err() {
        bump(global::TLS_MAP_FULL);
    }
}

/// Entry of `SSL_read`/`SSL_read_ex` (`tx` false) or `SSL_write`/`SSL_write_ex`.
#[inline(always)]
pub fn on_call(ssl: u64, buf: u64, len_out: u64, tx: bool) {
    let id = bpf_get_current_pid_tgid();
    if let Some(t) = WSG_TLS_THREAD.get_ptr_mut(&id) {
        // SAFETY: this thread's record.
        let t = unsafe { &mut *t };
        t.ssl = ssl;
        t.buf = buf;
        t.len_out = len_out;
        t.tx = tx as u8;
        t.in_call = 1;
        return;
    }
    let t = TlsThread { ssl, buf, len_out, last_rx: 0, in_call: 1, tx: tx as u8, _pad: [0; 6] };
    let _ = WSG_TLS_THREAD.insert(&id, &t, BPF_ANY);
}

/// Return of the call [`on_call`] saw: count its plaintext on the `SSL`'s connection.
#[inline(always)]
pub fn on_return(ret: i64) {
    let id = bpf_get_current_pid_tgid();
    let Some(t) = WSG_TLS_THREAD.get_ptr_mut(&id) else { return };
    // SAFETY: this thread's record.
    let t = unsafe { &mut *t };
    if t.in_call == 0 {
        return;
    }
    t.in_call = 0;
    let len = if t.len_out != 0 {
        if ret != 1 {
            return;
        }
        // SAFETY: user memory through the helper (the caller's size_t out-parameter).
        match unsafe { bpf_probe_read_user(t.len_out as *const u64) } {
            Ok(n) => n,
            Err(_) => return,
        }
    } else if ret > 0 {
        ret as u64
    } else {
        return;
    };
    if len == 0 {
        return;
    }
    let (ssl, buf, tx) = (t.ssl, t.buf, t.tx != 0);
    let cookie = match WSG_TLS_SSL.get_ptr(&ssl) {
        // SAFETY: map value.
        Some(k) => unsafe { *k },
        None if !tx && t.last_rx != 0 => {
            let cookie = t.last_rx;
            if WSG_TLS_LINK.get_ptr(&cookie).is_some() {
                // That socket belongs to another live SSL: no guess.
                bump(global::TLS_UNLINKED);
                return;
            }
            link(ssl, cookie);
            cookie
        }
        None => {
            bump(global::TLS_UNLINKED);
            return;
        }
    };
    let Some(c) = WSG_TLS_CONN.get_ptr_mut(&cookie) else { return };
    // SAFETY: map value; the socket's end deletes it only after its last I/O.
    let c = unsafe { &mut *c };
    let tgid = (id >> 32) as u32;
    c.tgid = tgid;
    let dir = if tx { Dir::Tx } else { Dir::Rx };
    lifecycle::on_data(ConnKey { tgid, fd: c.fd }, c, dir, buf, 0, 0, len);
}

/// `SSL_free(ssl)`: the link goes (the address may be reused by a later `SSL`).
#[inline(always)]
pub fn on_free(ssl: u64) {
    let Some(k) = WSG_TLS_SSL.get_ptr(&ssl) else { return };
    // SAFETY: map value.
    let cookie = unsafe { *k };
    let _ = WSG_TLS_SSL.remove(&ssl);
    if WSG_TLS_LINK.get_ptr(&cookie).is_some_and(|s| unsafe { *s } == ssl) {
        let _ = WSG_TLS_LINK.remove(&cookie);
    }
}

/// A TLS socket is destroyed: its plaintext connection ends like a plain one. A TLS connection
/// whose plaintext was never seen (no hooked library) is counted in `tls_unseen`, not as not
/// WebSocket.
#[inline(never)]
pub fn on_end(sk: *mut c_void) {
    // SAFETY: the tracepoint's own socket, passed only to the helper.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let linked = match WSG_TLS_LINK.get_ptr(&cookie) {
        Some(s) => {
            // SAFETY: map value.
            let ssl = unsafe { *s };
            if WSG_TLS_SSL.get_ptr(&ssl).is_some_and(|k| unsafe { *k } == cookie) {
                let _ = WSG_TLS_SSL.remove(&ssl);
            }
            let _ = WSG_TLS_LINK.remove(&cookie);
            true
        }
        None => false,
    };
    if let Some(c) = WSG_TLS_CONN.get_ptr(&cookie) {
        // SAFETY: map value.
        let c = unsafe { &*c };
        let seen = linked || c.phase != phase::NEW || c.http.total != 0;
        if !seen {
            bump(global::TLS_UNSEEN);
        } else if c.tgid != 0 {
            lifecycle::end(&ConnKey { tgid: c.tgid, fd: c.fd }, c);
        }
        let _ = WSG_TLS_CONN.remove(&cookie);
    } else {
        bump(global::TLS_UNSEEN);
    }
}

/// The plaintext's state of TLS socket `sk` (for the iterator).
#[inline(always)]
pub fn plaintext(sk: *mut c_void) -> Option<&'static ConnState> {
    // SAFETY: a socket pointer for the helper.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    // SAFETY: map value, read while the program runs.
    WSG_TLS_CONN.get_ptr(&cookie).map(|p| unsafe { &*p })
}
