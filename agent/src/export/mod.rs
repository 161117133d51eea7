//! What the agent exports about itself to other systems: Prometheus `/metrics` and the health
//! checks over a snapshot.

pub mod health;
pub mod keep;
pub mod metrics;
