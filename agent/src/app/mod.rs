//! The composition root: the root config (load, validate every section), start, the tick loop,
//! reload on SIGHUP, stop, and dropping privileges. The only module that wires the others.

pub mod config;
pub mod privs;
pub mod reload;
pub mod run;

#[cfg(test)]
mod tests;
