use super::*;

fn cfg() -> ShieldConfig {
    ShieldConfig::default()
}

fn run(cmd: &str) -> Vec<ShieldFinding> {
    analyze(cmd, &cfg())
}

fn max_risk(cmd: &str) -> u8 {
    crate::shield::risk_of(&run(cmd))
}

#[track_caller]
fn expect(cmd: &str, id: &str, min: u8) {
    let f = run(cmd);
    assert!(
        f.iter().any(|x| x.id == id && x.risk >= min),
        "`{cmd}`: expected {id} with risk >= {min}, got {f:#?}"
    );
}

#[track_caller]
fn benign(cmd: &str) {
    let f = run(cmd);
    assert!(
        f.iter().all(|x| x.risk < 40),
        "`{cmd}`: expected no finding >= 40, got {f:#?}"
    );
}

#[test]
fn smoke() {
    for c in ["rm -rf /", "ls -la", "echo \"rm -rf /\""] {
        eprintln!("{c}: {:#?}", run(c));
    }
}
