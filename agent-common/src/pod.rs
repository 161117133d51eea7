//! `aya::Pod` impls so userspace can read the kernel maps directly into these types.
use crate::{clientkey, conn, event, hist, stats};

// SAFETY: all are #[repr(C)], Copy, made of integers and integer arrays, valid for any bits.
unsafe impl aya::Pod for conn::ConnKey {}
unsafe impl aya::Pod for conn::ConnState {}
unsafe impl aya::Pod for stats::ProcStats {}
unsafe impl aya::Pod for stats::CloseCodeKey {}
unsafe impl aya::Pod for event::Event {}
unsafe impl aya::Pod for clientkey::KeyConfig {}
unsafe impl aya::Pod for hist::Hists {}
