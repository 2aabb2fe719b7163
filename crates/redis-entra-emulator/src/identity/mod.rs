//! The fake Entra ID (being written).
