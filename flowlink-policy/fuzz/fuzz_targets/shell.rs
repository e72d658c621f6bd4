//! Fuzz target: the shell analyser on arbitrary text. It must never panic, overflow its stack or
//! hang, and (the shield's invariant) must never return nothing for input it could not analyse —
//! which a fuzzer cannot judge, so this target checks only what can be: no crash, and every
//! finding is well formed.
#![no_main]

use flowlink_policy::shield::{self, InputKind, ShieldConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let cfg = ShieldConfig::default();
    let findings = shield::analyze(InputKind::Shell, &text, &cfg);
    for f in &findings {
        assert!(f.risk <= 100, "risk {} out of range in {}", f.risk, f.id);
        assert!(
            f.id.starts_with(f.category.as_str()),
            "id {} outside its category {}",
            f.id,
            f.category
        );
        assert!(
            f.evidence.chars().count() <= 201,
            "evidence longer than 200 characters in {}",
            f.id
        );
    }
    let _ = shield::risk_of(&findings);
});
