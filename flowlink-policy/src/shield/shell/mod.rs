//! Shell analysis (being written).
use super::{ShieldConfig, ShieldFinding};
/// Analyses a shell command line.
pub fn analyze(_text: &str, _cfg: &ShieldConfig) -> Vec<ShieldFinding> {
    Vec::new()
}
/// Analyses a path argument.
pub fn analyze_path(_text: &str, _cfg: &ShieldConfig) -> Vec<ShieldFinding> {
    Vec::new()
}
/// Analyses a URL argument.
pub fn analyze_url(_text: &str, _cfg: &ShieldConfig) -> Vec<ShieldFinding> {
    Vec::new()
}
