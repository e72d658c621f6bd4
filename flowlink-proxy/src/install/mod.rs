//! Editor configuration installers (being written).
