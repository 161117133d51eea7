//! `aya::Pod` impls so userspace can read the kernel maps directly into these types.
use crate::{conn, event, stats};

// SAFETY: all are #[repr(C)], Copy, made of integers and integer arrays, valid for any bits.
unsafe impl aya::Pod for conn::ConnKey {}
unsafe impl aya::Pod for conn::ConnState {}
unsafe impl aya::Pod for stats::ProcStats {}
unsafe impl aya::Pod for stats::CloseCodeKey {}
unsafe impl aya::Pod for event::Event {}
