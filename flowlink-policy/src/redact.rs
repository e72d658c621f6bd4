//! Redaction: every form of every secret value, out of text and JSON, replaced by
//! `[REDACTED:NAME]`.
//!
//! The proxy builds one [`Redactor`] from the secrets it injected into an MCP server and passes
//! everything that flows back through it: results, errors, notifications, the server's stderr,
//! audit records, approval requests. Pure: no I/O, no clock.
//!
//! # Forms
//! For each value (its UTF-8 bytes) the redactor looks for:
//! - the raw value;
//! - base64, standard and URL-safe alphabets, with and without padding;
//! - the value inside a longer base64 text: for each of the three alignments of the value
//!   against base64's 3-byte groups (`base64(prefix ‖ value ‖ suffix)` with `prefix` of length
//!   0, 1 or 2 modulo 3), the characters that depend on the value's bytes alone;
//! - percent-encoding, upper and lower case hex, space as `%20` or `+`, with the reserved sets
//!   of the common encoders (RFC 3986 unreserved, `encodeURIComponent`, `encodeURI`,
//!   `application/x-www-form-urlencoded`, Python's `quote`);
//! - hex, lower and upper case;
//! - JSON-escaped, as the value appears inside JSON text that is itself carried in a string
//!   (`JSON.stringify(process.env)`): minimal escaping, `\/`, `\uXXXX` for non-ASCII (lower and
//!   upper case hex), HTML-safe escaping of `<>&`, and the minimal form escaped twice.
//!
//! Values shorter than [`MIN_ENCODED_LEN`] bytes are looked for in their raw form only: their
//! encodings are too short to tell apart from ordinary text.
//!
//! # Matching
//! All forms of all values go into one Aho-Corasick automaton searched leftmost-longest, so
//! where two secrets overlap the longest match wins; a match that starts inside another and runs
//! past its end is joined to it, so no tail of a value survives. An empty value is ignored.
//!
//! # Splits and fragments
//! [`Redactor::redact_json`] treats the strings of one array — string elements and the `text`
//! member of object elements (MCP content blocks) — as one stream, so a value split across
//! neighbouring blocks is found and each part is replaced. At the start and the end of every
//! string (and of every text given to [`Redactor::redact_text`]) a *fragment* is replaced too: a
//! prefix of a form at the very end, or a suffix at the very start, at least
//! [`MIN_FRAGMENT_LEN`] bytes long and at least half the form — the part of a value split across
//! two messages or two stderr lines.
//!
//! # What it does not promise
//! It finds the forms above, not every transformation (a value reversed, re-encrypted, or split
//! into pieces shorter than a fragment goes through). The redactor keeps its copies of the
//! values in [`Zeroizing`] buffers; the automaton's own tables hold the patterns too and are
//! freed, not wiped.
//!
//! ```
//! use flowlink_policy::redact::Redactor;
//! use zeroize::Zeroizing;
//!
//! let r = Redactor::new(vec![("GITHUB_TOKEN".into(), Zeroizing::new("ghp_16C7e42F292c6912E7710c8".into()))]);
//! let (text, found) = r.redact_text("token=ghp_16C7e42F292c6912E7710c8; b64=Z2hwXzE2QzdlNDJGMjkyYzY5MTJFNzcxMGM4");
//! assert_eq!(text, "token=[REDACTED:GITHUB_TOKEN]; b64=[REDACTED:GITHUB_TOKEN]");
//! assert_eq!(found, ["GITHUB_TOKEN"]);
//!
//! let mut result = serde_json::json!({"content": [
//!     {"type": "text", "text": "here it is: ghp_16C7e42F29"},
//!     {"type": "text", "text": "2c6912E7710c8 (done)"}
//! ]});
//! assert_eq!(r.redact_json(&mut result), ["GITHUB_TOKEN"]);
//! assert_eq!(result["content"][0]["text"], "here it is: [REDACTED:GITHUB_TOKEN]");
//! assert_eq!(result["content"][1]["text"], "[REDACTED:GITHUB_TOKEN] (done)");
//! ```

use std::borrow::Cow;
use std::fmt;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};
use serde_json::Value;
use zeroize::Zeroizing;

/// Values shorter than this many bytes are redacted in their raw form only.
pub const MIN_ENCODED_LEN: usize = 6;

/// The shortest fragment of a form redacted at a string's start or end (it must also be at
/// least half the form).
pub const MIN_FRAGMENT_LEN: usize = 8;

/// Replaces secret values, in all their common forms, with `[REDACTED:NAME]`.
///
/// `Debug` prints the names only.
pub struct Redactor {
    /// Per secret (index = secret id): its name.
    names: Vec<String>,
    /// Per secret: `[REDACTED:NAME]`.
    labels: Vec<String>,
    /// Per automaton pattern id: the form and whose it is.
    patterns: Vec<Form>,
    /// Every form of every value, leftmost-longest. `None` when there is nothing to redact.
    matcher: Option<AhoCorasick>,
    /// The first [`MIN_FRAGMENT_LEN`] bytes of every form that can have fragments, to find a
    /// prefix of a form at the end of a text.
    heads: Option<Anchors>,
    /// The last [`MIN_FRAGMENT_LEN`] bytes of the same forms, to find a suffix at the start.
    tails: Option<Anchors>,
    /// The longest form, in bytes.
    longest: usize,
}

/// One form of one value.
struct Form {
    secret: usize,
    bytes: Zeroizing<Vec<u8>>,
}

/// Fixed-length pieces of forms and, per piece, the forms that have it.
struct Anchors {
    matcher: AhoCorasick,
    forms: Vec<Vec<usize>>,
}

/// A span of a text to replace, and the secrets found in it (in the order found).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Region {
    start: usize,
    end: usize,
    secrets: Vec<usize>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.names)
            .field("forms", &self.patterns.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for `(name, value)` pairs. Empty values are ignored; a value given under two
    /// names is reported under the first.
    pub fn new(secrets: Vec<(String, Zeroizing<String>)>) -> Redactor {
        let mut names = Vec::new();
        let mut all: Vec<Form> = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let secret = names.len();
            names.push(name);
            all.extend(
                forms(&value)
                    .into_iter()
                    .map(|bytes| Form { secret, bytes }),
            );
        }
        // One pattern per distinct form; the first secret to have it keeps it. (A stable sort,
        // so equal forms stay in secret order.)
        all.sort_by(|a, b| a.bytes.as_slice().cmp(b.bytes.as_slice()));
        all.dedup_by(|later, earlier| later.bytes == earlier.bytes);
        let longest = all.iter().map(|f| f.bytes.len()).max().unwrap_or(0);
        let matcher = (!all.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(all.iter().map(|f| f.bytes.as_slice()))
                .expect("the automaton of the secrets' forms builds")
        });
        let heads = anchors(&all, |b| &b[..MIN_FRAGMENT_LEN]);
        let tails = anchors(&all, |b| &b[b.len() - MIN_FRAGMENT_LEN..]);
        Redactor {
            labels: names.iter().map(|n| format!("[REDACTED:{n}]")).collect(),
            names,
            patterns: all,
            matcher,
            heads,
            tails,
            longest,
        }
    }

    /// No secret to redact.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The names of the secrets it redacts, in the order given (empty values left out).
    pub fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// Replaces every form of every value with `[REDACTED:NAME]`, and fragments at the text's
    /// start and end; the names found (each once, in the order found), or empty. Borrows when
    /// nothing was found.
    pub fn redact_text<'a>(&self, text: &'a str) -> (Cow<'a, str>, Vec<String>) {
        let regions = self.regions(text);
        if regions.is_empty() {
            return (Cow::Borrowed(text), Vec::new());
        }
        let mut found = Vec::new();
        for r in &regions {
            note(&mut found, &r.secrets);
        }
        (
            Cow::Owned(self.apply(text, &regions)),
            self.names_of(&found),
        )
    }

    /// Every string in a JSON value (keys too), plus values split across neighbouring strings of
    /// one array (MCP content blocks) and fragments at a string's start or end. Numbers whose
    /// text holds a value become the redacted string. The names found, each once, or empty.
    pub fn redact_json(&self, value: &mut Value) -> Vec<String> {
        if self.matcher.is_none() {
            return Vec::new();
        }
        let mut found = Vec::new();
        self.walk(value, &mut found);
        self.names_of(&found)
    }

    fn names_of(&self, secrets: &[usize]) -> Vec<String> {
        secrets.iter().map(|&s| self.names[s].clone()).collect()
    }

    fn walk(&self, value: &mut Value, found: &mut Vec<usize>) {
        match value {
            Value::String(s) => self.redact_pieces(&mut [s], found),
            Value::Number(n) => {
                let text = n.to_string();
                let regions = self.regions(&text);
                if !regions.is_empty() {
                    for r in &regions {
                        note(found, &r.secrets);
                    }
                    *value = Value::String(self.apply(&text, &regions));
                }
            }
            Value::Array(items) => {
                let mut pieces: Vec<&mut String> = items
                    .iter_mut()
                    .filter_map(|item| match item {
                        Value::String(s) => Some(s),
                        Value::Object(m) => match m.get_mut("text") {
                            Some(Value::String(t)) => Some(t),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect();
                if !pieces.is_empty() {
                    self.redact_pieces(&mut pieces, found);
                }
                for item in items.iter_mut() {
                    match item {
                        Value::String(_) => {}
                        Value::Object(m) => self.walk_object(m, true, found),
                        other => self.walk(other, found),
                    }
                }
            }
            Value::Object(m) => self.walk_object(m, false, found),
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// An object's keys and values; `text_done`: its `text` string was redacted with its array's
    /// stream already.
    fn walk_object(
        &self,
        m: &mut serde_json::Map<String, Value>,
        text_done: bool,
        found: &mut Vec<usize>,
    ) {
        let renamed: Vec<(usize, String)> = m
            .keys()
            .enumerate()
            .filter_map(|(i, k)| {
                let regions = self.regions(k);
                if regions.is_empty() {
                    return None;
                }
                for r in &regions {
                    note(found, &r.secrets);
                }
                Some((i, self.apply(k, &regions)))
            })
            .collect();
        if !renamed.is_empty() {
            // Keys that stay as they are, so a renamed key does not overwrite one of them.
            let kept: std::collections::HashSet<String> = m
                .keys()
                .enumerate()
                .filter(|(i, _)| !renamed.iter().any(|(j, _)| j == i))
                .map(|(_, k)| k.clone())
                .collect();
            let old = std::mem::take(m);
            let mut renamed = renamed.into_iter().peekable();
            for (i, (key, v)) in old.into_iter().enumerate() {
                let key = match renamed.next_if(|(j, _)| *j == i) {
                    Some((_, mut new)) => {
                        let _wipe = Zeroizing::new(key);
                        // Two keys redacted to the same text keep both entries.
                        let base = new.clone();
                        let mut n = 2;
                        while m.contains_key(&new) || kept.contains(&new) {
                            new = format!("{base}#{n}");
                            n += 1;
                        }
                        new
                    }
                    None => key,
                };
                m.insert(key, v);
            }
        }
        for (k, v) in m.iter_mut() {
            if text_done && k == "text" && v.is_string() {
                continue;
            }
            self.walk(v, found);
        }
    }

    /// Redacts `pieces` as one stream: matches may run across their boundaries, fragments are
    /// looked for at the start of the first and the end of the last.
    fn redact_pieces(&self, pieces: &mut [&mut String], found: &mut Vec<usize>) {
        if let [one] = pieces {
            let regions = self.regions(one);
            if regions.is_empty() {
                return;
            }
            for r in &regions {
                note(found, &r.secrets);
            }
            let new = self.apply(one, &regions);
            let _wipe = Zeroizing::new(std::mem::replace(*one, new));
            return;
        }
        let total = pieces.iter().map(|p| p.len()).sum();
        let mut joined = Zeroizing::new(String::with_capacity(total));
        for p in pieces.iter() {
            joined.push_str(p);
        }
        let regions = self.regions(&joined);
        if regions.is_empty() {
            return;
        }
        for r in &regions {
            note(found, &r.secrets);
        }
        let mut at = 0;
        let mut next = 0; // the first region that may reach this piece
        for piece in pieces.iter_mut() {
            let (start, end) = (at, at + piece.len());
            at = end;
            while next < regions.len() && regions[next].end <= start {
                next += 1;
            }
            let local: Vec<Region> = regions[next..]
                .iter()
                .take_while(|r| r.start < end)
                .filter(|r| r.end > start)
                .map(|r| Region {
                    start: r.start.max(start) - start,
                    end: r.end.min(end) - start,
                    secrets: r.secrets.clone(),
                })
                .collect();
            if !local.is_empty() {
                let new = self.apply(piece, &local);
                let _wipe = Zeroizing::new(std::mem::replace(*piece, new));
            }
        }
    }

    /// The spans of `text` to replace: every match of a form, and fragments at the start and
    /// the end; sorted, disjoint.
    fn regions(&self, text: &str) -> Vec<Region> {
        let Some(matcher) = &self.matcher else {
            return Vec::new();
        };
        let bytes = text.as_bytes();
        let mut regions: Vec<Region> = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let Some(m) = matcher.find(Input::new(bytes).span(at..bytes.len())) else {
                break;
            };
            // Search again from the next byte, not from the end: a form that starts inside this
            // match and runs past it is joined to it; one wholly inside it is not reported (the
            // longest wins).
            at = m.start() + 1;
            if regions.last().is_some_and(|last| m.end() <= last.end) {
                continue;
            }
            add(
                &mut regions,
                m.start(),
                m.end(),
                self.patterns[m.pattern()].secret,
            );
        }
        let mut fragments = self.fragments(bytes);
        if !fragments.is_empty() {
            fragments.append(&mut regions);
            fragments.sort_by_key(|r| r.start);
            for r in fragments {
                for s in r.secrets {
                    add(&mut regions, r.start, r.end, s);
                }
            }
        }
        regions
    }

    /// A prefix of a form at the end of `text` and a suffix of one at its start.
    fn fragments(&self, text: &[u8]) -> Vec<Region> {
        let mut out = Vec::new();
        let len = text.len();
        if len < MIN_FRAGMENT_LEN {
            return out;
        }
        let window = self.longest.saturating_sub(1).min(len);
        if let Some(heads) = &self.heads {
            let from = len - window;
            let mut best: Option<Region> = None;
            for m in heads
                .matcher
                .find_overlapping_iter(Input::new(text).span(from..len))
            {
                if best.as_ref().is_some_and(|b| b.start <= m.start()) {
                    continue;
                }
                let tail = &text[m.start()..];
                for &f in &heads.forms[m.pattern()] {
                    let form = &self.patterns[f];
                    if fragment_len_ok(tail.len(), form.bytes.len()) && form.bytes.starts_with(tail)
                    {
                        best = Some(Region {
                            start: m.start(),
                            end: len,
                            secrets: vec![form.secret],
                        });
                        break;
                    }
                }
            }
            out.extend(best);
        }
        if let Some(tails) = &self.tails {
            let mut best: Option<Region> = None;
            for m in tails
                .matcher
                .find_overlapping_iter(Input::new(text).span(0..window))
            {
                let head = &text[..m.end()];
                for &f in &tails.forms[m.pattern()] {
                    let form = &self.patterns[f];
                    if fragment_len_ok(head.len(), form.bytes.len())
                        && form.bytes.ends_with(head)
                        && best.as_ref().is_none_or(|b| b.end < m.end())
                    {
                        best = Some(Region {
                            start: 0,
                            end: m.end(),
                            secrets: vec![form.secret],
                        });
                    }
                }
            }
            out.extend(best);
        }
        out.retain(|r| text_is_char_boundary(text, r.start) && text_is_char_boundary(text, r.end));
        out
    }

    /// `text` with `regions` (sorted, disjoint, on character boundaries) replaced by labels.
    fn apply(&self, text: &str, regions: &[Region]) -> String {
        let mut out = String::with_capacity(text.len() + 16 * regions.len());
        let mut at = 0;
        for r in regions {
            // Regions are on character boundaries by construction; widen rather than panic if
            // one is not.
            let start = floor_boundary(text, r.start.max(at));
            let end = ceil_boundary(text, r.end.max(start));
            out.push_str(&text[at..start]);
            for &s in &r.secrets {
                out.push_str(&self.labels[s]);
            }
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }
}

/// A fragment of `fragment` bytes of a form of `form` bytes is redacted.
fn fragment_len_ok(fragment: usize, form: usize) -> bool {
    fragment < form && fragment >= MIN_FRAGMENT_LEN && fragment * 2 >= form
}

/// Adds a span found in order of start to sorted, disjoint `regions`, joining overlaps.
fn add(regions: &mut Vec<Region>, start: usize, end: usize, secret: usize) {
    if let Some(last) = regions.last_mut()
        && start < last.end
    {
        last.end = last.end.max(end);
        if !last.secrets.contains(&secret) {
            last.secrets.push(secret);
        }
        return;
    }
    regions.push(Region {
        start,
        end,
        secrets: vec![secret],
    });
}

fn note(found: &mut Vec<usize>, secrets: &[usize]) {
    for &s in secrets {
        if !found.contains(&s) {
            found.push(s);
        }
    }
}

fn anchors(forms: &[Form], piece: impl Fn(&[u8]) -> &[u8]) -> Option<Anchors> {
    let mut keyed: Vec<(&[u8], usize)> = forms
        .iter()
        .enumerate()
        .filter(|(_, f)| f.bytes.len() > MIN_FRAGMENT_LEN)
        .map(|(i, f)| (piece(&f.bytes), i))
        .collect();
    if keyed.is_empty() {
        return None;
    }
    keyed.sort();
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut owners: Vec<Vec<usize>> = Vec::new();
    for (p, i) in keyed {
        if pieces.last() == Some(&p) {
            if let Some(o) = owners.last_mut() {
                o.push(i);
            }
        } else {
            pieces.push(p);
            owners.push(vec![i]);
        }
    }
    let matcher = AhoCorasickBuilder::new()
        .match_kind(MatchKind::Standard)
        .build(&pieces)
        .expect("the automaton of the forms' ends builds");
    Some(Anchors {
        matcher,
        forms: owners,
    })
}

fn text_is_char_boundary(text: &[u8], i: usize) -> bool {
    i == text.len() || (i < text.len() && (text[i] as i8) >= -0x40)
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

// ---- the forms of a value ---------------------------------------------------------------------

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Every form of `value` looked for (duplicates included; the caller removes them).
fn forms(value: &str) -> Vec<Zeroizing<Vec<u8>>> {
    let raw = value.as_bytes();
    let mut out = vec![Zeroizing::new(raw.to_vec())];
    if raw.len() < MIN_ENCODED_LEN {
        return out;
    }
    for alphabet in [STANDARD, URL_SAFE] {
        let unpadded = base64(raw, alphabet);
        // Sized up front here and below: a buffer that grows leaves copies behind.
        let mut padded = Zeroizing::new(Vec::with_capacity(unpadded.len() + 2));
        padded.extend_from_slice(&unpadded);
        while !padded.len().is_multiple_of(4) {
            padded.push(b'=');
        }
        out.push(unpadded);
        out.push(padded);
        for k in 0..3 {
            out.push(base64_inner(raw, k, alphabet));
        }
    }
    for upper in [false, true] {
        out.push(hex(raw, upper));
    }
    for keep in [
        unreserved as fn(u8) -> bool,
        uri_component,
        uri,
        form_urlencoded,
        python_quote,
    ] {
        for upper in [false, true] {
            for plus in [false, true] {
                out.push(percent(raw, keep, upper, plus));
            }
        }
    }
    for slash in [false, true] {
        for ascii in [None, Some(false), Some(true)] {
            for html in [false, true] {
                let opts = JsonEscape { slash, ascii, html };
                out.push(Zeroizing::new(json_escape(value, opts).into_bytes()));
            }
        }
    }
    let once = json_escape(value, JsonEscape::MINIMAL);
    out.push(Zeroizing::new(
        json_escape(&once, JsonEscape::MINIMAL).into_bytes(),
    ));
    let _wipe = Zeroizing::new(once);
    out
}

/// Base64 without padding; a final partial group's last character has its missing bits zero.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len().div_ceil(3) * 4));
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    out
}

/// The characters of `base64(prefix ‖ value ‖ suffix)`, with `prefix` of `k` bytes (mod 3),
/// that depend on `value`'s bits alone.
fn base64_inner(value: &[u8], k: usize, alphabet: &[u8; 64]) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(k + value.len()));
    buf.resize(k, 0);
    buf.extend_from_slice(value);
    let encoded = base64(&buf, alphabet);
    // Character i carries bits [6i, 6i + 6); the value's bits are [8k, 8(k + n)).
    let first = (8 * k).div_ceil(6);
    let end = (8 * (k + value.len())) / 6;
    Zeroizing::new(encoded[first..end].to_vec())
}

fn hex(bytes: &[u8], upper: bool) -> Zeroizing<Vec<u8>> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() * 2));
    for &b in bytes {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 15)]);
    }
    out
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// JavaScript's `encodeURIComponent`.
fn uri_component(b: u8) -> bool {
    unreserved(b) || matches!(b, b'!' | b'\'' | b'(' | b')' | b'*')
}

/// JavaScript's `encodeURI`.
fn uri(b: u8) -> bool {
    uri_component(b) || b";,/?:@&=+$#".contains(&b)
}

/// `application/x-www-form-urlencoded` (WHATWG).
fn form_urlencoded(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_')
}

/// Python's `urllib.parse.quote` with its default `safe="/"`.
fn python_quote(b: u8) -> bool {
    unreserved(b) || b == b'/'
}

fn percent(bytes: &[u8], keep: fn(u8) -> bool, upper: bool, plus: bool) -> Zeroizing<Vec<u8>> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() * 3));
    for &b in bytes {
        if b == b' ' && plus {
            out.push(b'+');
        } else if keep(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}

#[derive(Clone, Copy)]
struct JsonEscape {
    /// `/` as `\/` (PHP).
    slash: bool,
    /// Non-ASCII as `\uXXXX`: `Some(upper case hex)` (Python, Jackson), or as is.
    ascii: Option<bool>,
    /// `<`, `>`, `&`, U+2028 and U+2029 as `\u….` (Go).
    html: bool,
}

impl JsonEscape {
    /// What `serde_json` and `JSON.stringify` write.
    const MINIMAL: JsonEscape = JsonEscape {
        slash: false,
        ascii: None,
        html: false,
    };
}

/// `value` as it appears between the quotes of a JSON string.
fn json_escape(value: &str, opts: JsonEscape) -> String {
    let upper = opts.ascii == Some(true);
    // At most six bytes per byte of input (a control character as `\u001f`).
    let mut out = String::with_capacity(value.len() * 6);
    let unit = |out: &mut String, u: u16| {
        if upper {
            out.push_str(&format!("\\u{u:04X}"));
        } else {
            out.push_str(&format!("\\u{u:04x}"));
        }
    };
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' => unit(&mut out, c as u16),
            '/' if opts.slash => out.push_str("\\/"),
            c if (opts.html && matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}'))
                || (opts.ascii.is_some() && (c == '\u{7f}' || !c.is_ascii())) =>
            {
                let mut buf = [0u16; 2];
                for &u in c.encode_utf16(&mut buf).iter() {
                    unit(&mut out, u);
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Has every character class the encoders treat differently: space, `/`, `+`, quotes, a
    /// backslash, `<>&`, `!*'()`, `~`-free, two-byte and three-byte UTF-8.
    const PW: &str = "Tr0ub4dor&3 /pässwörd+\"q\"\\z<é>!*'()€";

    fn redactor(pairs: &[(&str, &str)]) -> Redactor {
        Redactor::new(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), Zeroizing::new(v.to_string())))
                .collect(),
        )
    }

    /// A deterministic stream of pseudo-random bytes.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
        fn token(&mut self, len: usize) -> String {
            const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            (0..len)
                .map(|_| CHARS[self.next() as usize % CHARS.len()] as char)
                .collect()
        }
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    fn lower_percent(s: &str) -> String {
        let mut out = String::new();
        let mut hex_left = 0;
        for c in s.chars() {
            if hex_left > 0 {
                out.push(c.to_ascii_lowercase());
                hex_left -= 1;
            } else {
                out.push(c);
                if c == '%' {
                    hex_left = 2;
                }
            }
        }
        out
    }

    #[test]
    fn base64_and_hex_match_rfc_4648_vectors() {
        let cases = [
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(
                base64(plain.as_bytes(), STANDARD).as_slice(),
                encoded.as_bytes()
            );
        }
        assert_eq!(base64(&[0xfb, 0xff], STANDARD).as_slice(), b"+/8");
        assert_eq!(base64(&[0xfb, 0xff], URL_SAFE).as_slice(), b"-_8");
        assert_eq!(hex(b"\x01\xab", false).as_slice(), b"01ab");
        assert_eq!(hex(b"\x01\xab", true).as_slice(), b"01AB");
    }

    #[test]
    fn the_raw_value_is_replaced_by_its_name() {
        let r = redactor(&[("DB_PASSWORD", "correct-horse-battery")]);
        let (out, found) = r.redact_text("psql: password correct-horse-battery rejected");
        assert_eq!(out, "psql: password [REDACTED:DB_PASSWORD] rejected");
        assert_eq!(found, ["DB_PASSWORD"]);
        let (out, found) = r.redact_text("correct-horse-battery and again correct-horse-battery");
        assert_eq!(
            out,
            "[REDACTED:DB_PASSWORD] and again [REDACTED:DB_PASSWORD]"
        );
        assert_eq!(found, ["DB_PASSWORD"], "each name once");
    }

    /// Each form as real encoders write it (Python's base64, binascii, urllib.parse and json;
    /// Node's encodeURIComponent, encodeURI, URLSearchParams and JSON.stringify).
    #[test]
    fn every_encoded_form_is_replaced() {
        let r = redactor(&[("PW", PW)]);
        let b64 = "VHIwdWI0ZG9yJjMgL3DDpHNzd8O2cmQrInEiXHo8w6k+ISonKCnigqw=";
        let b64url = "VHIwdWI0ZG9yJjMgL3DDpHNzd8O2cmQrInEiXHo8w6k-ISonKCnigqw=";
        let hex =
            "547230756234646f722633202f70c3a4737377c3b672642b2271225c7a3cc3a93e212a272829e282ac";
        let quote_all = "Tr0ub4dor%263%20%2Fp%C3%A4ssw%C3%B6rd%2B%22q%22%5Cz%3C%C3%A9%3E%21%2A%27%28%29%E2%82%AC";
        let quote =
            "Tr0ub4dor%263%20/p%C3%A4ssw%C3%B6rd%2B%22q%22%5Cz%3C%C3%A9%3E%21%2A%27%28%29%E2%82%AC";
        let quote_plus =
            "Tr0ub4dor%263+%2Fp%C3%A4ssw%C3%B6rd%2B%22q%22%5Cz%3C%C3%A9%3E%21%2A%27%28%29%E2%82%AC";
        let uri_component =
            "Tr0ub4dor%263%20%2Fp%C3%A4ssw%C3%B6rd%2B%22q%22%5Cz%3C%C3%A9%3E!*'()%E2%82%AC";
        let uri = "Tr0ub4dor&3%20/p%C3%A4ssw%C3%B6rd+%22q%22%5Cz%3C%C3%A9%3E!*'()%E2%82%AC";
        let search_params =
            "Tr0ub4dor%263+%2Fp%C3%A4ssw%C3%B6rd%2B%22q%22%5Cz%3C%C3%A9%3E%21*%27%28%29%E2%82%AC";
        let json_ascii = r#"Tr0ub4dor&3 /p\u00e4ssw\u00f6rd+\"q\"\\z<\u00e9>!*'()\u20ac"#;
        let json_utf8 = r#"Tr0ub4dor&3 /pässwörd+\"q\"\\z<é>!*'()€"#;
        let json_twice = r#"Tr0ub4dor&3 /pässwörd+\\\"q\\\"\\\\z<é>!*'()€"#;
        let forms: Vec<(&str, String)> = vec![
            ("raw", PW.to_owned()),
            ("base64", b64.to_owned()),
            ("base64 unpadded", b64.trim_end_matches('=').to_owned()),
            ("base64url", b64url.to_owned()),
            (
                "base64url unpadded",
                b64url.trim_end_matches('=').to_owned(),
            ),
            ("hex", hex.to_owned()),
            ("HEX", hex.to_uppercase()),
            ("quote(safe='')", quote_all.to_owned()),
            ("quote(safe='') lower", lower_percent(quote_all)),
            ("quote", quote.to_owned()),
            ("quote lower", lower_percent(quote)),
            ("quote_plus", quote_plus.to_owned()),
            ("quote_plus lower", lower_percent(quote_plus)),
            ("encodeURIComponent", uri_component.to_owned()),
            ("encodeURIComponent lower", lower_percent(uri_component)),
            ("encodeURI", uri.to_owned()),
            ("URLSearchParams", search_params.to_owned()),
            ("json.dumps", json_ascii.to_owned()),
            (
                "Jackson ESCAPE_NON_ASCII",
                r#"Tr0ub4dor&3 /p\u00E4ssw\u00F6rd+\"q\"\\z<\u00E9>!*'()\u20AC"#.to_owned(),
            ),
            ("JSON.stringify", json_utf8.to_owned()),
            ("JSON.stringify twice", json_twice.to_owned()),
        ];
        for (what, form) in forms {
            let text = format!("before {form} after");
            let (out, found) = r.redact_text(&text);
            assert_eq!(out, "before [REDACTED:PW] after", "{what}: {form}");
            assert_eq!(found, ["PW"], "{what}");
        }
    }

    /// The JSON escape as `JSON.stringify(process.env)` leaves it, seen through redact_json
    /// (the outer JSON already decoded), and through redact_text on the message's text.
    #[test]
    fn json_text_carried_in_a_string_is_redacted() {
        let r = redactor(&[("PW", PW)]);
        let env = serde_json::to_string(&json!({"HOME": "/home/me", "PW": PW})).unwrap();
        let mut message = json!({"content": [{"type": "text", "text": env}]});
        assert_eq!(r.redact_json(&mut message), ["PW"]);
        assert_eq!(
            message["content"][0]["text"],
            r#"{"HOME":"/home/me","PW":"[REDACTED:PW]"}"#
        );

        let env = serde_json::to_string(&json!({"PW": PW})).unwrap();
        let line = serde_json::to_string(&json!({"result": {"text": env}})).unwrap();
        let (out, found) = r.redact_text(&line);
        assert_eq!(found, ["PW"]);
        assert_eq!(out, r#"{"result":{"text":"{\"PW\":\"[REDACTED:PW]\"}"}}"#);
    }

    /// base64(prefix ‖ value ‖ suffix) for prefixes of every length modulo 3: the characters
    /// that carry only the value's bits are replaced.
    #[test]
    fn base64_of_a_longer_text_is_redacted_at_every_alignment() {
        let r = redactor(&[("PW", PW)]);
        // From Python: base64.b64encode(prefix + value + b"tail!").
        let cases = [
            (
                "",
                "VHIwdWI0ZG9yJjMgL3DDpHNzd8O2cmQrInEiXHo8w6k+ISonKCnigqx0YWlsIQ==",
            ),
            (
                "A",
                "QVRyMHViNGRvciYzIC9ww6Rzc3fDtnJkKyJxIlx6PMOpPiEqJygp4oKsdGFpbCE=",
            ),
            (
                "AB",
                "QUJUcjB1YjRkb3ImMyAvcMOkc3N3w7ZyZCsicSJcejzDqT4hKicoKeKCrHRhaWwh",
            ),
            (
                "ABC",
                "QUJDVHIwdWI0ZG9yJjMgL3DDpHNzd8O2cmQrInEiXHo8w6k+ISonKCnigqx0YWlsIQ==",
            ),
            (
                "ABCD",
                "QUJDRFRyMHViNGRvciYzIC9ww6Rzc3fDtnJkKyJxIlx6PMOpPiEqJygp4oKsdGFpbCE=",
            ),
        ];
        for (prefix, encoded) in cases {
            let (out, found) = r.redact_text(encoded);
            assert_eq!(found, ["PW"], "prefix {prefix:?}");
            let rest = out.replace("[REDACTED:PW]", "");
            // What is left encodes the prefix, "tail!" and at most one boundary character on
            // each side of the value.
            assert!(rest.len() <= 8 + 8 + 2, "prefix {prefix:?}: {out}");
        }
        // Standard and URL-safe alphabets alike.
        let url = "QUJUcjB1YjRkb3ImMyAvcMOkc3N3w7ZyZCsicSJcejzDqT4hKicoKeKCrHRhaWwh"
            .replace('+', "-")
            .replace('/', "_");
        assert_eq!(r.redact_text(&url).1, ["PW"]);
    }

    #[test]
    fn values_shorter_than_six_bytes_are_redacted_raw_only() {
        let r = redactor(&[("PIN", "48213")]);
        assert_eq!(r.redact_text("pin 48213").0, "pin [REDACTED:PIN]");
        // base64("48213") and hex: too short to tell from ordinary text, left alone.
        assert_eq!(r.redact_text("NDgyMTM= 3438323133").1, Vec::<String>::new());
        let six = redactor(&[("K", "482137")]);
        assert_eq!(six.redact_text("NDgyMTM3").0, "[REDACTED:K]");
    }

    #[test]
    fn a_value_split_across_content_blocks_is_redacted_in_both() {
        let value = "ghp_R2x1c3RlcjpTZWNyZXQ0MjQy";
        let r = redactor(&[("GITHUB_TOKEN", value)]);
        for split in 1..value.len() {
            let mut result = json!({"content": [
                {"type": "text", "text": format!("the token is {}", &value[..split])},
                {"type": "text", "text": format!("{} - keep it safe", &value[split..])},
            ]});
            assert_eq!(
                r.redact_json(&mut result),
                ["GITHUB_TOKEN"],
                "split {split}"
            );
            assert_eq!(
                result["content"][0]["text"], "the token is [REDACTED:GITHUB_TOKEN]",
                "split {split}"
            );
            assert_eq!(
                result["content"][1]["text"], "[REDACTED:GITHUB_TOKEN] - keep it safe",
                "split {split}"
            );
        }
    }

    #[test]
    fn a_value_split_across_three_blocks_and_plain_string_arrays() {
        let value = "sk-live-9a8b7c6d5e4f3a2b1c0d";
        let r = redactor(&[("STRIPE", value)]);
        let mut result = json!({"content": [
            {"type": "text", "text": format!("key: {}", &value[..5])},
            {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
            {"type": "text", "text": &value[5..15]},
            {"type": "text", "text": format!("{}\nend", &value[15..])},
        ]});
        assert_eq!(r.redact_json(&mut result), ["STRIPE"]);
        assert_eq!(result["content"][0]["text"], "key: [REDACTED:STRIPE]");
        assert_eq!(result["content"][1]["data"], "iVBORw0KGgo=");
        assert_eq!(result["content"][2]["text"], "[REDACTED:STRIPE]");
        assert_eq!(result["content"][3]["text"], "[REDACTED:STRIPE]\nend");

        let mut lines = json!(["first sk-live-9a8b7c", "6d5e4f3a2b1c0d", "last"]);
        assert_eq!(r.redact_json(&mut lines), ["STRIPE"]);
        assert_eq!(
            lines,
            json!(["first [REDACTED:STRIPE]", "[REDACTED:STRIPE]", "last"])
        );
    }

    #[test]
    fn fragments_at_a_strings_end_or_start_are_redacted() {
        let value = "AKIAIOSFODNN7EXAMPLEKEY1"; // 24 bytes: fragments of 12 or more
        let r = redactor(&[("AWS", value)]);
        // The first part of a value split across two messages.
        let mut first = json!({"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": format!("key={}", &value[..12])}});
        assert_eq!(r.redact_json(&mut first), ["AWS"]);
        assert_eq!(first["params"]["data"], "key=[REDACTED:AWS]");
        let mut second = json!({"params": {"data": format!("{} (rest)", &value[10..])}});
        assert_eq!(r.redact_json(&mut second), ["AWS"]);
        assert_eq!(second["params"]["data"], "[REDACTED:AWS] (rest)");
        // Stderr lines through redact_text: the same.
        assert_eq!(
            r.redact_text(&format!("export AWS_SECRET={}", &value[..16]))
                .0,
            "export AWS_SECRET=[REDACTED:AWS]"
        );
        assert_eq!(
            r.redact_text(&format!("{}\"", &value[4..])).0,
            "[REDACTED:AWS]\""
        );
        // The end of one content block array and the start of the next message's.
        let mut blocks = json!([{"type": "text", "text": format!("a {}", &value[..13])}]);
        assert_eq!(r.redact_json(&mut blocks), ["AWS"]);
        assert_eq!(blocks[0]["text"], "a [REDACTED:AWS]");
    }

    #[test]
    fn fragments_too_short_or_not_at_an_edge_are_kept() {
        let value = "AKIAIOSFODNN7EXAMPLEKEY1";
        let r = redactor(&[("AWS", value)]);
        // Less than half the value.
        let text = format!("key={}", &value[..11]);
        assert_eq!(r.redact_text(&text).0, text);
        let text = format!("{} tail", &value[13..]);
        assert_eq!(r.redact_text(&text).0, text);
        // Inside a string rather than at an edge.
        let text = format!("key={} and more", &value[..20]);
        assert_eq!(r.redact_text(&text).0, text);
        // Fewer than eight bytes, though more than half of a short value.
        let short = redactor(&[("S", "9f8e7d6c5b4a")]); // 12 bytes
        assert_eq!(short.redact_text("x 9f8e7d6").1, Vec::<String>::new());
        assert_eq!(short.redact_text("x 9f8e7d6c").0, "x [REDACTED:S]");
        assert_eq!(short.redact_text("7d6c5b4a y").0, "[REDACTED:S] y");
        assert_eq!(short.redact_text("d6c5b4a y").1, Vec::<String>::new());
    }

    #[test]
    fn a_fragment_of_an_encoded_form_is_redacted_too() {
        let r = redactor(&[("PW", PW)]);
        let b64 = "VHIwdWI0ZG9yJjMgL3DDpHNzd8O2cmQrInEiXHo8w6k+ISonKCnigqw=";
        let text = format!("Authorization: Basic {}", &b64[..40]);
        let (out, found) = r.redact_text(&text);
        assert_eq!(found, ["PW"]);
        assert_eq!(out, "Authorization: Basic [REDACTED:PW]");
    }

    #[test]
    fn overlapping_secrets_the_longest_wins() {
        let r = redactor(&[
            ("SHORT", "abcdefgh12345678"),
            ("LONG", "abcdefgh12345678XYZW0000"),
            ("INNER", "45678XYZ"),
        ]);
        let (out, found) = r.redact_text("k=abcdefgh12345678XYZW0000;");
        assert_eq!(out, "k=[REDACTED:LONG];");
        assert_eq!(found, ["LONG"]);
        let (out, found) = r.redact_text("k=abcdefgh12345678;");
        assert_eq!(out, "k=[REDACTED:SHORT];");
        assert_eq!(found, ["SHORT"]);
        let (out, found) = r.redact_text("k=45678XYZ;");
        assert_eq!(out, "k=[REDACTED:INNER];");
        assert_eq!(found, ["INNER"]);
    }

    #[test]
    fn overlapping_secrets_leave_no_tail_behind() {
        let r = redactor(&[("A", "1111aaaa2222bbbb"), ("B", "2222bbbb3333cccc")]);
        let (out, found) = r.redact_text("x 1111aaaa2222bbbb3333cccc y");
        assert_eq!(out, "x [REDACTED:A][REDACTED:B] y");
        assert_eq!(found, ["A", "B"]);
        // The same value under two names is reported under the first.
        let r = redactor(&[("FIRST", "same-value-here"), ("SECOND", "same-value-here")]);
        assert_eq!(r.redact_text("same-value-here").1, ["FIRST"]);
    }

    #[test]
    fn unicode_values_in_every_form() {
        let value = "пароль-🔑-秘密-ß";
        let r = redactor(&[("U", value)]);
        // Python: json.dumps(value)[1:-1], urllib.parse.quote(value), base64.b64encode.
        let json_ascii = r"\u043f\u0430\u0440\u043e\u043b\u044c-\ud83d\udd11-\u79d8\u5bc6-\u00df";
        let quoted = "%D0%BF%D0%B0%D1%80%D0%BE%D0%BB%D1%8C-%F0%9F%94%91-%E7%A7%98%E5%AF%86-%C3%9F";
        let b64 = "0L/QsNGA0L7Qu9GMLfCflJEt56eY5a+GLcOf";
        for form in [value, json_ascii, quoted, b64] {
            let text = format!("«{form}» — ok");
            let (out, found) = r.redact_text(&text);
            assert_eq!(out, "«[REDACTED:U]» — ok", "{form}");
            assert_eq!(found, ["U"]);
        }
        // Split at a character boundary across two blocks.
        let mut blocks = json!([{"text": "→ пароль-🔑"}, {"text": "-秘密-ß ←"}]);
        assert_eq!(r.redact_json(&mut blocks), ["U"]);
        assert_eq!(
            blocks,
            json!([{"text": "→ [REDACTED:U]"}, {"text": "[REDACTED:U] ←"}])
        );
        // Ordinary text with multi-byte characters next to the edges does not panic.
        for text in [
            "🔑",
            "ß-秘",
            "秘密秘密秘密秘密秘密",
            "пароль-🔑-秘",
            "-秘密-ß",
        ] {
            let _ = r.redact_text(text);
        }
    }

    #[test]
    fn keys_nested_values_and_numbers_are_redacted() {
        let r = redactor(&[
            ("TOKEN", "tok_0123456789abcdef"),
            ("CARD", "4111111111111111"),
        ]);
        let mut msg = json!({
            "jsonrpc": "2.0",
            "id": 7,
            "result": {
                "content": [{"type": "resource", "resource": {
                    "uri": "file:///tmp/.env",
                    "text": "TOKEN=tok_0123456789abcdef\n"
                }}],
                "structuredContent": {
                    "tok_0123456789abcdef": "a key",
                    "nested": [[{"deep": "Bearer tok_0123456789abcdef"}]],
                    "card": 4111111111111111u64,
                    "count": 3
                },
                "isError": false
            }
        });
        let found = r.redact_json(&mut msg);
        assert_eq!(found, ["TOKEN", "CARD"]);
        let res = &msg["result"];
        assert_eq!(
            res["content"][0]["resource"]["text"],
            "TOKEN=[REDACTED:TOKEN]\n"
        );
        assert_eq!(res["structuredContent"]["[REDACTED:TOKEN]"], "a key");
        assert_eq!(
            res["structuredContent"]["nested"][0][0]["deep"],
            "Bearer [REDACTED:TOKEN]"
        );
        assert_eq!(res["structuredContent"]["card"], "[REDACTED:CARD]");
        assert_eq!(res["structuredContent"]["count"], 3);
        assert_eq!(msg["id"], 7);
        // Key order is kept; two keys redacted alike both stay.
        let keys: Vec<&String> = res["structuredContent"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["[REDACTED:TOKEN]", "nested", "card", "count"]);
        let mut two = json!({"a tok_0123456789abcdef": 1, "a [REDACTED:TOKEN]": 2});
        r.redact_json(&mut two);
        assert_eq!(
            two,
            json!({"a [REDACTED:TOKEN]#2": 1, "a [REDACTED:TOKEN]": 2})
        );
    }

    #[test]
    fn large_inputs() {
        let value = "xoxb-2048-4096-Zm9vYmFyYmF6cXV4";
        let r = redactor(&[("SLACK", value)]);
        let mut rng = Lcg(7);
        let mut text = String::new();
        text.push_str(value);
        let mut middle = false;
        while text.len() < 2 << 20 {
            text.push_str(&rng.token(60));
            text.push('\n');
            if text.len() > 1 << 20 && !middle {
                text.push_str(&format!("middle {value} "));
                middle = true;
            }
        }
        text.push_str(&value[..20]); // a fragment at the very end
        let (out, found) = r.redact_text(&text);
        assert_eq!(found, ["SLACK"]);
        assert_eq!(out.matches("[REDACTED:SLACK]").count(), 3);
        assert!(!out.contains("xoxb-2048"));

        let clean: String = text.replace(value, "").replace(&value[..20], "");
        let (out, found) = r.redact_text(&clean);
        assert!(matches!(out, Cow::Borrowed(_)));
        assert!(found.is_empty());

        let blocks: Vec<Value> = text
            .as_bytes()
            .chunks(64 * 1024)
            .map(|c| json!({"type": "text", "text": String::from_utf8_lossy(c)}))
            .collect();
        let mut result = json!({"content": blocks});
        assert_eq!(r.redact_json(&mut result), ["SLACK"]);
        assert!(
            !serde_json::to_string(&result)
                .unwrap()
                .contains("xoxb-2048")
        );
    }

    #[test]
    fn no_false_positives_on_ordinary_text() {
        let mut rng = Lcg(42);
        let mut secrets: Vec<(String, Zeroizing<String>)> = (0..20)
            .map(|i| (format!("S{i}"), Zeroizing::new(rng.token(16 + i * 3))))
            .collect();
        secrets.push((
            "WITH_SYMBOLS".into(),
            Zeroizing::new("p@ss w0rd/+=?&%#".into()),
        ));
        secrets.push(("SHORTISH".into(), Zeroizing::new("Xy7#kQ".into())));
        let r = Redactor::new(secrets);
        let prose = "The quick brown fox jumps over the lazy dog. Error: connection refused \
            (os error 111) while reading /etc/passwd; retrying in 5 s. Password must be at least \
            12 characters. {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\
            \"text\":\"ok\"}]}} https://example.com/search?q=hello%20world&lang=en+GB \
            fn main() { println!(\"{}\", 1 + 2); } SELECT * FROM users WHERE id = 42; \
            deadbeefcafebabe0123456789abcdef 3q2+7w== AAAAB3NzaC1yc2EAAAADAQABAAABAQ ";
        let mut corpus = String::new();
        for i in 0..200 {
            corpus.push_str(prose);
            corpus.push_str(&format!("line {i} "));
            let random = rng.bytes(48);
            corpus.push_str(
                &base64(&random, STANDARD)
                    .iter()
                    .map(|&b| b as char)
                    .collect::<String>(),
            );
            corpus.push(' ');
            corpus.push_str(
                &hex(&random, false)
                    .iter()
                    .map(|&b| b as char)
                    .collect::<String>(),
            );
            corpus.push('\n');
        }
        let (out, found) = r.redact_text(&corpus);
        assert!(found.is_empty(), "{found:?}");
        assert!(matches!(out, Cow::Borrowed(_)));
        let mut doc = json!({"content": corpus.lines().map(|l| json!({"type": "text", "text": l})).collect::<Vec<_>>()});
        let before = doc.clone();
        assert!(r.redact_json(&mut doc).is_empty());
        assert_eq!(doc, before);
    }

    #[test]
    fn debug_prints_names_only_and_empty_values_are_ignored() {
        let r = redactor(&[("GITHUB_TOKEN", "ghp_supersecretvalue1234"), ("EMPTY", "")]);
        let debug = format!("{r:?}");
        assert!(debug.contains("GITHUB_TOKEN"), "{debug}");
        assert!(!debug.contains("supersecret"), "{debug}");
        assert!(!debug.contains("Z2hwX3N1cGVyc2Vj"), "{debug}");
        assert_eq!(r.names(), ["GITHUB_TOKEN"]);
        assert!(!r.is_empty());

        let none = Redactor::new(Vec::new());
        assert!(none.is_empty());
        assert!(none.names().is_empty());
        assert!(matches!(none.redact_text("anything").0, Cow::Borrowed(_)));
        let mut v = json!({"a": ["b"]});
        assert!(none.redact_json(&mut v).is_empty());
        assert!(redactor(&[("E", "")]).is_empty());
    }
}
