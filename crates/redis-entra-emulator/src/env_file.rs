//! The env file (being written).
