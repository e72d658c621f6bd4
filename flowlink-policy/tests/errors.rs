//! Policy files that must be rejected, and where the error points.

use flowlink_policy::{Policy, PolicyError};

fn err(src: &str) -> PolicyError {
    match Policy::from_toml(src) {
        Ok(_) => panic!("policy should be rejected:\n{src}"),
        Err(e) => e,
    }
}

fn at(e: &PolicyError) -> (Option<usize>, Option<usize>) {
    (e.line, e.column)
}

#[test]
fn syntax_error_has_position() {
    let e = err("version = 1\n[[rules]\nid = \"x\"\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.column.is_some(), "{e}");
    assert!(e.to_string().starts_with("line 2, column "), "{e}");
}

#[test]
fn unknown_action() {
    let src = "version = 1\n\n[[rules]]\nid = \"x\"\n    action = \"alow\"\n";
    let e = err(src);
    assert_eq!(at(&e), (Some(5), Some(14)), "{e}");
    assert_eq!(
        e.to_string(),
        "line 5, column 14: unknown action `alow` (expected allow, block, approve or confirm)"
    );
    let e = err("version = 1\ndefault_action = \"deny\"\n");
    assert_eq!(at(&e), (Some(2), Some(18)), "{e}");
    let e = err("version = 1\n[offline]\napprove = \"confirm\"\n");
    assert_eq!(at(&e), (Some(3), Some(11)), "{e}");
    assert!(e.message.contains("expected allow or block"), "{e}");
}

#[test]
fn bad_regex() {
    let src = "version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\n[[rules.when]]\npointer = \"/a\"\nregex = \"(unclosed\"\n";
    let e = err(src);
    assert_eq!(at(&e), (Some(7), Some(9)), "{e}");
    assert!(e.message.contains("bad regex `(unclosed`"), "{e}");
}

#[test]
fn regex_too_big_is_rejected() {
    let src = "version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\nwhen = [{ pointer = \"/a\", regex = '(\\w{500}){500}' }]\n";
    let e = err(src);
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("too big"), "{e}");
}

#[test]
fn bad_glob() {
    let src = "version = 1\n[[rules]]\nid = \"x\"\ntool = [\"ok\", \"[bad\"]\naction = \"block\"\n";
    let e = err(src);
    assert_eq!(at(&e), (Some(4), Some(8)), "{e}");
    assert!(e.message.contains("bad glob `[bad`"), "{e}");
    let src = "version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\nlabels = { env = \"{a\" }\n";
    let e = err(src);
    assert_eq!(at(&e), (Some(5), Some(18)), "{e}");
    assert!(e.message.contains("label `env`"), "{e}");
    let e = err("version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\ntool = []\n");
    assert_eq!(at(&e), (Some(5), Some(8)), "{e}");
}

#[test]
fn bad_pointer() {
    let src = "version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\n[[rules.when]]\npointer = \"message\"\npresent = true\n";
    let e = err(src);
    assert_eq!(at(&e), (Some(6), Some(11)), "{e}");
    assert!(e.message.contains("JSON pointer"), "{e}");
}

#[test]
fn duplicate_id() {
    let src = "version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\n[[rules]]\nid = \"x\"\naction = \"allow\"\n";
    let e = err(src);
    assert_eq!(at(&e), (Some(6), Some(6)), "{e}");
    assert!(
        e.message
            .contains("duplicate rule id `x` (first used on line 3)"),
        "{e}"
    );
}

#[test]
fn unknown_field() {
    let src = "version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\ntools = \"echo\"\n";
    let e = err(src);
    assert_eq!(at(&e), (Some(5), Some(1)), "{e}");
    assert!(e.message.contains("unknown field `tools`"), "{e}");
    let e = err("version = 1\nhide_tools = true\n");
    assert_eq!(at(&e), (Some(2), Some(1)), "{e}");
    let src = "version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\n[[rules.when]]\npointer = \"/a\"\nmatches = \"x\"\n";
    let e = err(src);
    assert_eq!(at(&e), (Some(7), Some(1)), "{e}");
    let e = err("version = 1\n[offline]\nconfirm_timeout = 3\n");
    assert_eq!(at(&e), (Some(3), Some(1)), "{e}");
}

#[test]
fn wrong_or_missing_version() {
    let e = err("# header\nversion = 2\n");
    assert_eq!(at(&e), (Some(2), Some(11)), "{e}");
    assert!(e.message.contains("unsupported policy version 2"), "{e}");
    let e = err("default_action = \"allow\"\n");
    assert!(e.message.contains("missing field `version`"), "{e}");
}

#[test]
fn condition_needs_exactly_one_test() {
    let src = "version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\n[[rules.when]]\npointer = \"/a\"\nglob = \"x\"\nregex = \"y\"\n";
    let e = err(src);
    assert!(e.message.contains("2 tests (glob, regex)"), "{e}");
    assert!(e.line.is_some(), "{e}");
    let src =
        "version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\nwhen = [{ pointer = \"/a\" }]\n";
    let e = err(src);
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("no test"), "{e}");
}

#[test]
fn rate_limit_errors() {
    let base = "version = 1\n[[rate_limits]]\nid = \"r\"\n";
    let e = err(&format!("{base}scope = \"user\"\nper_second = 1\n"));
    assert_eq!(at(&e), (Some(4), Some(9)), "{e}");
    assert!(e.message.contains("unknown rate-limit scope `user`"), "{e}");
    let e = err(&format!(
        "{base}scope = \"tool\"\nper_second = 1\nper_minute = 2\n"
    ));
    assert!(e.message.contains("exactly one of per_second"), "{e}");
    let e = err(&format!("{base}scope = \"tool\"\n"));
    assert!(e.message.contains("exactly one of per_second"), "{e}");
    let e = err(&format!("{base}scope = \"tool\"\nper_second = 0\n"));
    assert_eq!(at(&e), (Some(5), Some(14)), "{e}");
    let e = err(&format!(
        "{base}scope = \"tool\"\nper_second = 1\nburst = -1\n"
    ));
    assert_eq!(e.line, Some(6), "{e}");
    let e = err(&format!(
        "{base}scope = \"tool\"\nper_second = 1\n[[rate_limits]]\nid = \"r\"\nscope = \"agent\"\nper_hour = 1\n"
    ));
    assert!(e.message.contains("duplicate rate limit id `r`"), "{e}");
}

#[test]
fn other_value_errors() {
    let e = err("version = 1\n[offline]\nconfirm_timeout_secs = 0\n");
    assert_eq!(at(&e), (Some(3), Some(24)), "{e}");
    let e = err("version = 1\n[[rules]]\nid = \"  \"\naction = \"block\"\n");
    assert!(e.message.contains("must not be empty"), "{e}");
    let e = err("version = 1\n[[rules]]\nid = \"x\"\n");
    assert!(e.message.contains("missing field `action`"), "{e}");
    let e = err("version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\ntool = 5\n");
    assert_eq!(e.line, Some(5), "{e}");
}
