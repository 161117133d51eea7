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
mod walk;

use aya_ebpf::{
    macros::{btf_tracepoint, sock_ops},
    programs::{BtfTracePointContext, SockOpsContext},
};

wsguard_common::named!(
    wsg_sock_ops = PROG_SOCK_OPS,
    wsg_sock_recv = PROG_RECV,
    wsg_sock_send = PROG_SEND,
    wsg_sock_end = PROG_END,
    wsg_sock_iter = PROG_ITER,
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
