//! The agent's modules as a library. The `wsguard` binary (`src/main.rs`) is a thin command line
//! over it; the fuzz targets (`fuzz/`) link it to feed the config loader and the API arbitrary
//! input. New modules are declared here, not in `main.rs`.
//!
//! Folders follow the data flow and imports point one way (see `docs/architecture.md`):
//! `model` at the bottom, then `probe` → `track` → `history`, `predict` → `alert` → `notify`,
//! `remediate` → `export`, with `api`, `cli`, `top` at the edges and `app` the composition root;
//! `util` is shared infrastructure under everything.
//!
//! Privacy: a module is `pub` only when the binary (`main.rs`) or the fuzz targets name it
//! (`alert`, `api`, `app`, `cli`, `export`, `history`, `model`, `top`, `track`); the others are
//! `pub(crate)`, so the compiler reports their dead code.

pub mod alert;
pub mod api;
pub mod app;
pub mod cli;
pub mod export;
pub mod history;
pub mod model;
pub(crate) mod notify;
pub(crate) mod predict;
pub(crate) mod probe;
pub(crate) mod remediate;
pub mod top;
pub mod track;
pub(crate) mod util;
