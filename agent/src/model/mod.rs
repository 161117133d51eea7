//! The data model at the bottom of the flow: what the agent knows at one instant (the snapshot and
//! its parts), as plain types with serde and no I/O. Everything above reads it; it imports
//! nothing of the probe, the tracker or the edges.

pub mod clients;
pub mod probe;
pub mod resources;
pub mod snapshot;
pub mod sse;
