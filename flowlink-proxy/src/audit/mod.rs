//! The local audit store (being written).
