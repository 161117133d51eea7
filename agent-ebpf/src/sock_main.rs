//! wsguard's kernel probe, socket mode (`[probe] mode = "socket"`): follows inbound TCP
//! connections by their socket, whichever process reads or writes them, classifies them at the
//! HTTP upgrade and counts WebSocket frames exactly. It only reads user memory; it never writes
//! to it and never alters traffic.
//!
//! A separate object from the syscall mode's (`main.rs`) so a kernel without socket storage or
//! BTF tracepoints still loads that one: its maps are created only when this mode is chosen.
//! Hooks and why: see `sock.rs` and docs/architecture.md.
#![no_std]
#![no_main]
#![allow(internal_features)]
#![feature(core_intrinsics)]

// Shared with the syscall mode's object; a few of their items only that mode uses.
#[allow(dead_code)]
mod atomic;
mod copy;
mod handshake;
mod lifecycle;
mod maps;
mod record;
#[allow(dead_code)]
mod regs;
mod sock;
mod sse;
mod tls;
mod walk;

use aya_ebpf::{
    macros::{btf_tracepoint, sock_ops, uprobe, uretprobe},
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext, SockOpsContext},
};

wsguard_common::named!(
    wsg_sock_ops = PROG_SOCK_OPS,
    wsg_sock_recv = PROG_RECV,
    wsg_sock_send = PROG_SEND,
    wsg_sock_end = PROG_END,
    wsg_sock_state = PROG_STATE,
    wsg_sock_iter = PROG_ITER,
    wsg_ssl_read = PROG_SSL_READ,
    wsg_ssl_read_ex = PROG_SSL_READ_EX,
    wsg_ssl_write = PROG_SSL_WRITE,
    wsg_ssl_write_ex = PROG_SSL_WRITE_EX,
    wsg_ssl_ret = PROG_SSL_RET,
    wsg_ssl_free = PROG_SSL_FREE,
);

#[sock_ops]
pub fn wsg_sock_ops(ctx: SockOpsContext) -> u32 {
    sock::on_sock_ops(&ctx);
    1
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn wsg_sock_recv(ctx: BtfTracePointContext) -> i32 {
    sock::on_io(&ctx, record::Dir::Rx);
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn wsg_sock_send(ctx: BtfTracePointContext) -> i32 {
    sock::on_io(&ctx, record::Dir::Tx);
    0
}

#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn wsg_sock_end(ctx: BtfTracePointContext) -> i32 {
    sock::on_end(&ctx);
    0
}

/// A TCP state change (`sk, oldstate, newstate`): which side of an SSE stream closed first.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn wsg_sock_state(ctx: BtfTracePointContext) -> i32 {
    sock::on_state(&ctx);
    0
}

/// `SSL_read(ssl, buf, num)` (OpenSSL; see tls.rs). The return probe of all four calls is
/// `wsg_ssl_ret`.
#[uprobe]
pub fn wsg_ssl_read(ctx: ProbeContext) -> u32 {
    tls::on_call(ctx.arg::<u64>(0).unwrap_or(0), ctx.arg::<u64>(1).unwrap_or(0), 0, false);
    0
}

/// `SSL_read_ex(ssl, buf, num, size_t *readbytes)`.
#[uprobe]
pub fn wsg_ssl_read_ex(ctx: ProbeContext) -> u32 {
    let out = ctx.arg::<u64>(3).unwrap_or(0);
    if out != 0 {
        tls::on_call(ctx.arg::<u64>(0).unwrap_or(0), ctx.arg::<u64>(1).unwrap_or(0), out, false);
    }
    0
}

/// `SSL_write(ssl, buf, num)`.
#[uprobe]
pub fn wsg_ssl_write(ctx: ProbeContext) -> u32 {
    tls::on_call(ctx.arg::<u64>(0).unwrap_or(0), ctx.arg::<u64>(1).unwrap_or(0), 0, true);
    0
}

/// `SSL_write_ex(ssl, buf, num, size_t *written)`.
#[uprobe]
pub fn wsg_ssl_write_ex(ctx: ProbeContext) -> u32 {
    let out = ctx.arg::<u64>(3).unwrap_or(0);
    if out != 0 {
        tls::on_call(ctx.arg::<u64>(0).unwrap_or(0), ctx.arg::<u64>(1).unwrap_or(0), out, true);
    }
    0
}

/// Return of `SSL_read`, `SSL_read_ex`, `SSL_write` or `SSL_write_ex`.
#[uretprobe]
pub fn wsg_ssl_ret(ctx: RetProbeContext) -> u32 {
    tls::on_return(ctx.ret::<i32>() as i64);
    0
}

/// `SSL_free(ssl)`.
#[uprobe]
pub fn wsg_ssl_free(ctx: ProbeContext) -> u32 {
    tls::on_free(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

/// BPF iterator over TCP sockets (aya-ebpf 0.2.1 has no `#[iter]` macro: the section is named
/// by hand, as libbpf would).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn wsg_sock_iter(ctx: *mut core::ffi::c_void) -> i32 {
    sock::on_iter(ctx as *const u64);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
