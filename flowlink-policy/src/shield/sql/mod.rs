//! SQL analysis (being written).
use super::{ShieldConfig, ShieldFinding};
/// Analyses SQL text.
pub fn analyze(_text: &str, _cfg: &ShieldConfig) -> Vec<ShieldFinding> {
    Vec::new()
}
