//! wsguard's kernel probe: follows accepted connections of watched processes, classifies them at
//! the HTTP upgrade and counts WebSocket frames exactly. It only reads user memory; it never writes
//! to it and never alters traffic.
//!
//! Hooks are the raw `sys_enter`/`sys_exit` tracepoints (no kprobes/fentry, no BTF needed): the
//! entry hook only looks at `close`/`accept`, the exit hook acts on the bytes the kernel really
//! moved (`ret`). Both filter on a bitmap of watched processes before any hash-map work.
#![no_std]
#![no_main]
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod atomic;
mod copy;
mod handshake;
mod lifecycle;
mod maps;
mod record;
mod regs;
mod sse;
mod syscall;
mod walk;

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

wsguard_common::named!(wsg_sys_enter = PROG_ENTER, wsg_sys_exit = PROG_EXIT);

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn wsg_sys_enter(ctx: RawTracePointContext) -> u32 {
    let _ = syscall::try_sys_enter(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn wsg_sys_exit(ctx: RawTracePointContext) -> u32 {
    syscall::try_sys_exit(&ctx);
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
