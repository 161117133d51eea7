//! Remediator tests.
