//! The agent's modules as a library. The `wsguard` binary (`src/main.rs`) is a thin command line
//! over it; the fuzz targets (`fuzz/`) link it to feed the config loader and the API arbitrary
//! input. New modules are declared here, not in `main.rs`.

pub mod alert;
pub mod api;
pub mod api_socket;
pub mod cli;
pub mod client;
pub mod completions;
pub mod config;
pub mod config_cmd;
pub mod conns;
pub mod detach_cmd;
pub mod doctor;
pub mod events;
pub mod health;
pub mod history;
pub mod k8s;
pub mod keyhash;
pub mod metrics;
pub mod notify;
pub mod predict;
pub mod private_file;
pub mod privs;
pub mod probe;
pub mod procinfo;
pub mod reload;
pub mod remediate;
pub mod resources;
pub mod run;
pub mod snapshot;
pub mod token;
pub mod top;
pub mod track;
