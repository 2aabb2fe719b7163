//! The Redis gateway (being written).
