//! `Redactor` over a 1 MiB `tools/call` result with 20 secrets: nothing to find (the usual
//! case), and a few values in several forms (raw, base64, split across two content blocks, a
//! fragment at the end). Also what building the redactor costs.
//!
//! Run: `cargo bench -p flowlink-policy --bench redact -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flowlink_policy::redact::Redactor;
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// A deterministic stream of pseudo-random numbers.
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
}

/// 20 secrets shaped like real ones: API tokens, a password with symbols, a private key.
fn secrets() -> Vec<(String, Zeroizing<String>)> {
    let mut rng = Lcg(2026);
    let mut out: Vec<(String, Zeroizing<String>)> = (0..17)
        .map(|i| {
            let value = match i % 4 {
                0 => format!("ghp_{}", rng.token(36)),
                1 => format!("sk-live-{}", rng.token(24)),
                2 => format!("xoxb-{}-{}", rng.next() % 100_000, rng.token(24)),
                _ => rng.token(32),
            };
            (format!("SECRET_{i}"), Zeroizing::new(value))
        })
        .collect();
    out.push((
        "DB_PASSWORD".into(),
        Zeroizing::new("c0rrect horse/battery+staple\"!".into()),
    ));
    out.push((
        "AWS_SECRET_ACCESS_KEY".into(),
        Zeroizing::new(rng.token(40)),
    ));
    let key: String = (0..20).map(|_| rng.token(64) + "\n").collect();
    out.push((
        "TLS_KEY".into(),
        Zeroizing::new(format!(
            "-----BEGIN PRIVATE KEY-----\n{key}-----END PRIVATE KEY-----\n"
        )),
    ));
    out
}

/// What a tool's output looks like: log lines, paths, JSON fragments, some base64.
fn line(rng: &mut Lcg, i: usize) -> String {
    match i % 5 {
        0 => format!(
            "2026-11-25T10:{:02}:{:02}Z INFO request id={} path=/api/v1/items/{} status=200 took={}ms\n",
            i % 60,
            (i * 7) % 60,
            rng.token(12),
            i,
            rng.next() % 900
        ),
        1 => format!(
            "src/module_{}/file_{}.rs:{}: warning: unused variable `value_{}`\n",
            i % 13,
            i % 31,
            i,
            i
        ),
        2 => format!(
            "{{\"id\": {i}, \"name\": \"item {i}\", \"tags\": [\"a\", \"b\"], \"ok\": true}}\n"
        ),
        3 => format!("blob: {}\n", rng.token(76)),
        _ => "The quick brown fox jumps over the lazy dog; nothing secret in this line at all.\n"
            .to_owned(),
    }
}

/// A `tools/call` result of about 1 MiB: 16 text blocks of 64 KiB.
fn result(rng: &mut Lcg) -> Value {
    let mut blocks = Vec::new();
    let mut i = 0;
    for _ in 0..16 {
        let mut text = String::new();
        while text.len() < 64 * 1024 {
            text.push_str(&line(rng, i));
            i += 1;
        }
        blocks.push(json!({"type": "text", "text": text}));
    }
    json!({"jsonrpc": "2.0", "id": 1, "result": {"content": blocks, "isError": false}})
}

/// The same result with a few values in it: raw, base64, split across blocks 3 and 4, and the
/// first two thirds of one at the end of the last block.
fn result_with_secrets(secrets: &[(String, Zeroizing<String>)]) -> Value {
    let mut v = result(&mut Lcg(1));
    let blocks = v["result"]["content"].as_array_mut().expect("blocks");
    let text = |b: &mut Value| -> String { b["text"].as_str().expect("text").to_owned() };
    let s0 = secrets[0].1.as_str();
    let s1 = secrets[1].1.as_str();
    let s2 = secrets[2].1.as_str();
    let s3 = secrets[3].1.as_str();
    let mid = |t: &str, add: &str| -> String {
        let at = t.len() / 2;
        let at = (at..t.len())
            .find(|&i| t.is_char_boundary(i))
            .unwrap_or(t.len());
        format!("{}{add}{}", &t[..at], &t[at..])
    };
    blocks[0]["text"] = json!(mid(&text(&mut blocks[0]), &format!("token={s0}\n")));
    blocks[1]["text"] = json!(mid(
        &text(&mut blocks[1]),
        &format!("Basic {}\n", base64_std(s1.as_bytes()))
    ));
    let half = s2.len() / 2;
    blocks[3]["text"] = json!(format!("{}{}", text(&mut blocks[3]), &s2[..half]));
    blocks[4]["text"] = json!(format!("{}{}", &s2[half..], text(&mut blocks[4])));
    let last = blocks.len() - 1;
    let cut = s3.len() * 2 / 3;
    blocks[last]["text"] = json!(format!("{}{}", text(&mut blocks[last]), &s3[..cut]));
    v
}

fn base64_std(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let secrets = secrets();
    let redactor = Redactor::new(secrets.clone());
    let clean = result(&mut Lcg(1));
    let dirty = result_with_secrets(&secrets);
    let clean_text = serde_json::to_string(&clean).expect("json");
    let size = clean_text.len() as u64;
    println!("1 MiB result: {size} bytes of JSON, 16 text blocks; {redactor:?}");

    // The result as the test expects it, once, outside the measurement.
    let mut check = dirty.clone();
    let found = redactor.redact_json(&mut check);
    assert_eq!(found.len(), 4, "{found:?}");
    let mut check = clean.clone();
    assert!(redactor.redact_json(&mut check).is_empty());

    let mut g = c.benchmark_group("redact");
    g.throughput(Throughput::Bytes(size));
    g.bench_function("redact_json/1 MiB, 20 secrets, none found", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            |v| black_box(redactor.redact_json(v)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("redact_json/1 MiB, 20 secrets, 4 found in 5 places", |b| {
        b.iter_batched_ref(
            || dirty.clone(),
            |v| black_box(redactor.redact_json(v)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("redact_text/1 MiB JSON text, 20 secrets, none found", |b| {
        b.iter(|| black_box(redactor.redact_text(black_box(&clean_text))))
    });
    g.finish();

    c.bench_function("Redactor::new/20 secrets", |b| {
        b.iter(|| black_box(Redactor::new(black_box(secrets.clone()))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
