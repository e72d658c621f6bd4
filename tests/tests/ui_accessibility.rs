//! Accessibility of every page in a real headless Chromium against the real `flowlink-control`
//! binary: the sign-in page signed out, then, signed in as an owner (who sees every form), the
//! start page, the account page and every section an organisation's navigation links to.
//!
//! On each page, checked in the browser with the styles applied:
//! - the page has a language and exactly one `h1`; every link and button has a name;
//! - every visible input, select and text area has a label (`label[for]`, an enclosing
//!   `label`, `aria-label` or `aria-labelledby`); table headers state their `scope`; images
//!   have `alt`; no id is used twice;
//! - text contrast meets WCAG 2.1 AA (4.5:1, 3:1 for large text), with the background found by
//!   compositing the element's ancestors;
//! - keyboard: pressing Tab reaches every focusable element in turn (no trap, nothing
//!   unreachable), the first stop is "Skip to content", and each stop shows a focus indicator
//!   (an outline or a box shadow).
//!
//! - on a phone-sized window (390 px) nothing but a table's own scrolling box is wider than the
//!   screen.
//!
//! Screenshots of each page, laptop and phone sized, are saved under `target/ui-screenshots/`.

use flowlink_e2e::browser::Browser;
use flowlink_e2e::link::{Control, OWNER, setup_org};
use serde_json::{Value, json};

const POLICY: &str = "version = 1\ndefault_action = \"allow\"\n";

/// Structure and contrast problems of the page in the browser (empty when none).
const AUDIT_PAGE: &str = r#"
const problems = [];
const visible = el => {
  const cs = getComputedStyle(el);
  const r = el.getBoundingClientRect();
  return cs.visibility !== 'hidden' && cs.display !== 'none' && (r.width > 0 || r.height > 0);
};
if (!document.documentElement.lang) problems.push('the page has no lang');
const h1s = document.querySelectorAll('h1');
if (h1s.length !== 1) problems.push(`${h1s.length} h1 elements`);
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden' || !visible(el)) continue;
  const labelled = (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`))
    || el.closest('label') || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
  if (!labelled) problems.push(`unlabelled ${el.tagName.toLowerCase()} name=${el.name}`);
}
for (const th of document.querySelectorAll('th')) {
  if (!th.getAttribute('scope')) problems.push(`a table header without scope: "${th.textContent.trim()}"`);
}
for (const img of document.querySelectorAll('img')) {
  if (!img.hasAttribute('alt')) problems.push(`an image without alt: ${img.src.slice(0, 60)}`);
}
for (const el of document.querySelectorAll('a[href], button')) {
  if (!visible(el)) continue;
  const name = el.textContent.trim() || el.getAttribute('aria-label') || el.getAttribute('title')
    || (el.querySelector('img[alt]') && el.querySelector('img[alt]').alt);
  if (!name) problems.push(`a ${el.tagName.toLowerCase()} without a name`);
}
const ids = new Set();
for (const el of document.querySelectorAll('[id]')) {
  if (ids.has(el.id)) problems.push(`the id ${el.id} is used twice`);
  ids.add(el.id);
}
const rgba = s => {
  const m = s.match(/rgba?\(([^)]+)\)/);
  if (!m) return null;
  const p = m[1].split(/[ ,\/]+/).filter(x => x).map(parseFloat);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
};
const lum = c => {
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
};
const background = el => {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
  }
  let out = [255, 255, 255];
  for (const c of layers.reverse()) out = out.map((v, i) => c[i] * c[3] + v * (1 - c[3]));
  return out;
};
for (const el of document.querySelectorAll('body *')) {
  if (!visible(el)) continue;
  const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
  if (!text) continue;
  const cs = getComputedStyle(el);
  const fg = rgba(cs.color);
  if (!fg) continue;
  const bg = background(el);
  const shown = fg.slice(0, 3).map((v, i) => v * fg[3] + bg[i] * (1 - fg[3]));
  const [a, b] = [lum(shown), lum(bg)];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const size = parseFloat(cs.fontSize);
  const large = size >= 24 || (parseInt(cs.fontWeight, 10) >= 700 && size >= 18.66);
  const need = large ? 3 : 4.5;
  if (ratio < need) {
    problems.push(`contrast ${ratio.toFixed(2)}:1 (needs ${need}) for "${text.slice(0, 40)}": ${cs.color} on rgb(${bg.map(Math.round).join(',')})`);
  }
}
return problems;
"#;

/// Numbers the page's keyboard stops and records, for each focus, which stop it was and whether
/// it showed an indicator; returns how many stops there are.
const WATCH_FOCUS: &str = r#"
const focusable = [...document.querySelectorAll(
  'a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]')]
  .filter(el => !el.disabled && el.tabIndex >= 0)
  .filter(el => { const cs = getComputedStyle(el); const r = el.getBoundingClientRect();
                  return cs.visibility !== 'hidden' && cs.display !== 'none' && (r.width > 0 || r.height > 0); });
focusable.forEach((el, i) => el.dataset.stop = String(i));
// Start from the top of the document, whatever has focus (an autofocused field, say).
document.body.tabIndex = -1;
document.body.focus();
window.__stops = [];
document.addEventListener('focusin', e => {
  const cs = getComputedStyle(e.target);
  const outline = cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0;
  const shadow = cs.boxShadow && cs.boxShadow !== 'none';
  window.__stops.push({stop: e.target.dataset.stop ?? null, tag: e.target.tagName.toLowerCase(),
    text: (e.target.textContent || e.target.name || '').trim().slice(0, 30),
    indicated: outline || shadow});
});
return focusable.length;
"#;

fn check_page(browser: &Browser, name: &str) {
    let problems = browser.execute(AUDIT_PAGE, json!([]));
    let problems: Vec<String> = problems
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    assert!(
        problems.is_empty(),
        "{name} ({}) has accessibility problems:\n{}",
        browser.path(),
        problems.join("\n")
    );

    let stops = browser
        .execute(WATCH_FOCUS, json!([]))
        .as_u64()
        .unwrap_or(0);
    // Tab until every stop has had focus. Some controls take several presses (a date-time
    // input has a stop per field), so keep pressing, up to a bound that a trap would exceed.
    let stops = usize::try_from(stops).unwrap_or(0);
    let mut pressed = 0;
    let (seen, missing) = loop {
        browser.press_tab(stops.max(1));
        pressed += stops.max(1);
        let seen = browser.execute("return window.__stops;", json!([]));
        let seen: Vec<Value> = seen
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s["stop"].is_string())
            .collect();
        let reached: Vec<usize> = seen
            .iter()
            .filter_map(|s| s["stop"].as_str().and_then(|v| v.parse().ok()))
            .collect();
        let missing: Vec<usize> = (0..stops).filter(|i| !reached.contains(i)).collect();
        if missing.is_empty() || pressed > stops * 4 + 20 {
            break (seen, missing);
        }
    };
    assert!(
        missing.is_empty(),
        "{name}: {pressed} presses of Tab never reached stops {missing:?} of {stops}; it went {seen:?}"
    );
    if let Some(first) = seen.first() {
        assert!(
            first["text"]
                .as_str()
                .is_some_and(|t| t.contains("Skip to content")),
            "{name}: the first Tab stop is {first}, not the skip link"
        );
    }
    for s in &seen {
        assert!(
            s["indicated"].as_bool() == Some(true),
            "{name}: the Tab stop {s} shows no focus indicator"
        );
    }
    browser.screenshot(name);

    // On a phone the page reflows: nothing wider than the screen but tables, which scroll in
    // their own box.
    browser.window_size(390, 844);
    let overflow = browser.execute(
        "return document.documentElement.scrollWidth - window.innerWidth;",
        json!([]),
    );
    let wide = browser.execute(
        "return [...document.querySelectorAll('main *')].filter(e => !e.closest('.table-wrap') && e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : ''));",
        json!([]),
    );
    assert!(
        overflow.as_i64().unwrap_or(0) <= 1,
        "{name}: on a 390 px wide phone the page is {overflow} px wider than the screen; too wide: {wide}"
    );
    browser.screenshot(&format!("{name}-phone"));
    browser.window_size(1280, 900);
}

#[test]
fn every_page_has_labels_contrast_and_a_keyboard_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/control.db", dir.path().display());
    let control = Control::start(&db, dir.path());
    setup_org(&control, POLICY);
    let base = control.url.clone();

    let browser = Browser::start("ui_accessibility");
    browser.goto(&format!("{base}/ui/sign-in"));
    check_page(&browser, "sign-in");

    browser.fill("#email", OWNER.0);
    browser.fill("#password", OWNER.1);
    browser.click("form[action$='/ui/sign-in'] button[type=submit]");
    browser.wait_path("/ui/");
    check_page(&browser, "home");

    // Every section of the organisation, as its navigation lists them.
    let sections: Vec<(String, String)> = browser
        .execute(
            "return [...document.querySelectorAll('#orgs nav.org-nav a')].map(a => [a.textContent.trim(), a.getAttribute('href')]);",
            json!([]),
        )
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|pair| {
                    Some((
                        pair[0].as_str()?.to_owned(),
                        pair[1].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        sections.len() >= 6,
        "the start page links every section of the organisation: {sections:?}"
    );
    for (label, href) in &sections {
        browser.goto(&format!("{base}{href}"));
        let title = browser.text("h1");
        assert!(
            !title.contains("Not found") && !title.contains("Not possible"),
            "the {label} section ({href}) is not a working page: {}",
            browser.text("main")
        );
        check_page(&browser, &format!("org-{}", label.to_lowercase()));
    }

    // And the pages one step further in, with their forms.
    for (name, path) in [
        ("account", "/ui/account"),
        ("approval-history", "/ui/orgs/acme/approvals/history"),
        ("command-history", "/ui/orgs/acme/audit?view=commands"),
        ("enrolment-tokens", "/ui/orgs/acme/agents/enrolment"),
        ("policy-org", "/ui/orgs/acme/policies/org"),
        ("policy-edit", "/ui/orgs/acme/policies/org/edit"),
        ("policy-versions", "/ui/orgs/acme/policies/org/versions"),
        ("policy-tester", "/ui/orgs/acme/policies/explain"),
        ("members", "/ui/orgs/acme/settings/members"),
        ("api-tokens", "/ui/orgs/acme/settings/tokens"),
    ] {
        browser.goto(&format!("{base}{path}"));
        let title = browser.text("h1");
        assert!(
            !title.contains("Not found") && !title.contains("Not possible"),
            "{path} is not a working page: {}",
            browser.text("main")
        );
        check_page(&browser, name);
    }
}
