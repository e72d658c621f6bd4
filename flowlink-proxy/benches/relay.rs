//! What the proxy adds: `tools/call` round trips through `flowlink-proxy` against the same server
//! direct, in one run; pipelined throughput; idle resident memory.
//!
//! Run: `cargo bench -p flowlink-proxy --bench relay` (add `-- --calls N` to change the sample).
//! The MCP server is this same binary in server mode (a minimal echo server), so the numbers
//! measure the relay, not a slow server.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_MODE: &str = "FLOWLINK_BENCH_ECHO_SERVER";

fn main() {
    if std::env::var_os(SERVER_MODE).is_some() {
        echo_server();
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let calls = flag(&args, "--calls").unwrap_or(20_000);
    let pipelined = flag(&args, "--pipelined").unwrap_or(200_000);
    let exe = std::env::current_exe().expect("current exe");
    let proxy = env!("CARGO_BIN_EXE_flowlink-proxy");
    let dir = std::env::temp_dir().join(format!("flowlink-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let direct_cmd = vec![exe.display().to_string()];
    let mut proxied_cmd = vec![
        proxy.to_owned(),
        "--name".into(),
        "bench".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--".into(),
    ];
    proxied_cmd.extend(direct_cmd.clone());

    println!(
        "flowlink-proxy relay benchmark: {calls} sequential tools/call round trips each way, {pipelined} pipelined pings"
    );
    // Idle CPUs of a VM take tens of microseconds to wake, which would swamp what is being
    // measured (and favour whichever side keeps more threads busy). Asking the kernel for zero
    // wake-up latency while this runs keeps the CPUs out of idle states, the usual practice for
    // latency benchmarks; without the permission, the numbers include wake-ups and say so.
    let _awake = keep_cpus_awake();
    // Direct and proxied calls alternate in one loop, so both see the same conditions.
    let (direct, proxied) = round_trips(&direct_cmd, &proxied_cmd, calls);
    let (p50d, p99d) = (pct(&direct, 50.0), pct(&direct, 99.0));
    let (p50p, p99p) = (pct(&proxied, 50.0), pct(&proxied, 99.0));
    println!(
        "tools/call round trip direct : p50 {:>8.1} µs  p99 {:>8.1} µs",
        us(p50d),
        us(p99d)
    );
    println!(
        "tools/call round trip proxied: p50 {:>8.1} µs  p99 {:>8.1} µs",
        us(p50p),
        us(p99p)
    );
    println!(
        "added by the proxy          : p50 {:>8.1} µs  p99 {:>8.1} µs",
        us(p50p) - us(p50d),
        us(p99p) - us(p99d)
    );

    let rate_direct = throughput(&direct_cmd, pipelined);
    let rate_proxied = throughput(&proxied_cmd, pipelined);
    println!("pipelined ping request+response pairs/s direct : {rate_direct:>10.0}");
    println!(
        "pipelined ping request+response pairs/s proxied: {rate_proxied:>10.0}  ({:.0} messages/s through the proxy, both directions)",
        rate_proxied * 2.0
    );

    let calls_direct = call_throughput(&direct_cmd, pipelined / 4);
    let calls_proxied = call_throughput(&proxied_cmd, pipelined / 4);
    println!("pipelined tools/call round trips/s direct : {calls_direct:>10.0}");
    println!(
        "pipelined tools/call round trips/s proxied: {calls_proxied:>10.0}  (each decided and journalled, then ingested into SQLite)"
    );

    let rss = idle_rss(&proxied_cmd);
    println!(
        "proxy resident memory after initialize, idle 1 s: {:.1} MiB",
        rss as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: String,
}

impl Session {
    fn start(cmd: &[String]) -> Session {
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env(SERVER_MODE, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut s = Session {
            child,
            stdin,
            stdout,
            line: String::new(),
        };
        s.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#);
        s.recv();
        s.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        s
    }
    fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).expect("write");
        self.stdin.write_all(b"\n").expect("write");
        self.stdin.flush().expect("flush");
    }
    fn recv(&mut self) -> &str {
        self.line.clear();
        self.stdout.read_line(&mut self.line).expect("read");
        assert!(!self.line.is_empty(), "server closed its output");
        &self.line
    }
    fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

fn keep_cpus_awake() -> Option<std::fs::File> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/cpu_dma_latency")
        .ok()?;
    f.write_all(&0i32.to_ne_bytes()).ok()?;
    println!("(CPU idle states held off through /dev/cpu_dma_latency while measuring latency)");
    Some(f)
}

fn round_trips(direct: &[String], proxied: &[String], n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut d = Session::start(direct);
    let mut p = Session::start(proxied);
    let mut out_d = Vec::with_capacity(n);
    let mut out_p = Vec::with_capacity(n);
    for i in 0..(n + 500) {
        let req = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"hello {i}"}}}}}}"#,
            i + 1
        );
        for (s, out) in [(&mut d, &mut out_d), (&mut p, &mut out_p)] {
            let t = Instant::now();
            s.send(&req);
            let line = s.recv();
            debug_assert!(line.contains("hello"));
            // The first 500 warm up caches and the audit store.
            if i >= 500 {
                out.push(t.elapsed());
            }
        }
    }
    d.stop();
    p.stop();
    out_d.sort();
    out_p.sort();
    (out_d, out_p)
}

fn throughput(cmd: &[String], n: usize) -> f64 {
    let line = |i: usize| format!(r#"{{"jsonrpc":"2.0","id":{},"method":"ping"}}"#, i + 1);
    throughput_of(cmd, n, line)
}

fn call_throughput(cmd: &[String], n: usize) -> f64 {
    let line = |i: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"hello {i}"}}}}}}"#,
            i + 1
        )
    };
    throughput_of(cmd, n, line)
}

fn throughput_of(cmd: &[String], n: usize, line: impl Fn(usize) -> String) -> f64 {
    let mut s = Session::start(cmd);
    let mut payload = String::with_capacity(n * 64);
    for i in 0..n {
        payload.push_str(&line(i));
        payload.push('\n');
    }
    let t = Instant::now();
    let mut stdin = s.stdin;
    let writer = std::thread::spawn(move || {
        stdin.write_all(payload.as_bytes()).expect("write");
        stdin.flush().expect("flush");
        stdin
    });
    let mut got = 0;
    let mut line = String::new();
    while got < n {
        line.clear();
        if s.stdout.read_line(&mut line).expect("read") == 0 {
            break;
        }
        got += 1;
    }
    let rate = got as f64 / t.elapsed().as_secs_f64();
    s.stdin = writer.join().expect("writer");
    s.stop();
    rate
}

fn idle_rss(cmd: &[String]) -> u64 {
    let s = Session::start(cmd);
    std::thread::sleep(Duration::from_secs(1));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    s.stop();
    kib
}

/// A minimal MCP server: answers initialize, ping and tools/call (echo) as fast as it can.
fn echo_server() {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut input = BufReader::with_capacity(1 << 16, stdin.lock());
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(id) = msg.get("id") else { continue };
        let result = match msg["method"].as_str() {
            Some("initialize") => {
                serde_json::json!({"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"bench-echo","version":"1"}})
            }
            Some("tools/call") => {
                serde_json::json!({"content":[{"type":"text","text": msg["params"]["arguments"]["text"]}]})
            }
            _ => serde_json::json!({}),
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({"jsonrpc":"2.0","id":id,"result":result})
        );
        // Flush when nothing more is waiting, so pipelined input is answered in batches.
        if input.buffer().is_empty() {
            let _ = out.flush();
        }
    }
}
