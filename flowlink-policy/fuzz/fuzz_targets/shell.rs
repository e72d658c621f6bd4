//! Fuzz target: the shell analyser on arbitrary text. It must never panic, overflow its stack or
//! hang, and (the shield's invariant) must never return nothing for input it could not analyse —
//! which a fuzzer cannot judge, so this target checks only what can be: no crash, and every
//! finding is well formed.
#![no_main]

use flowlink_policy::shield::{self, InputKind, ShieldConfig};
use libfuzzer_sys::fuzz_target;

/// brush-parser panics on some inputs; the analyser catches those panics and turns them into a
/// finding (see `shield/shell/walk.rs`, `guarded`). libFuzzer's panic hook aborts before the
/// catch can happen, so this hook lets panics raised inside brush-parser unwind to that catch and
/// hands every other panic to libFuzzer's hook, which still reports it as a crash.
fn let_parser_panics_unwind() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .location()
                .is_some_and(|l| l.file().contains("brush-parser"))
            {
                return;
            }
            fuzzer_hook(info);
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_parser_panics_unwind();
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
