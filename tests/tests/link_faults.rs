//! Fault tests of the link with the real binaries: while the Python `mcp` client streams `echo`
//! calls through an enrolled `flowlink-proxy`, the control plane is killed, the network is cut,
//! the proxy is killed, PostgreSQL restarts. Each test then counts what the control plane holds:
//! every answered call exactly once (one call id per message), nothing else but what was sent,
//! no event stored twice.

use std::thread;
use std::time::{Duration, Instant};

use flowlink_e2e::link::{
    Background, Control, Device, PrivatePostgres, Relay, SOON, answered, assert_exactly_once,
    control_tool_calls, link_script, proxy_pid, setup_org, wait_outbox_empty, wait_until,
};
use serde_json::Value;

const ALLOW_ALL: &str = "version = 1\ndefault_action = \"allow\"\n";

/// Calls in the control-plane kill test (the 10,000; ~30 s in a debug build).
const BIG_STREAM: usize = 10_000;
/// Calls in the other fault tests.
const STREAM: usize = 3_000;
/// Bound on one streaming run, fault and drain included.
const STREAM_TIMEOUT: Duration = Duration::from_secs(240);

fn stream(device: &Device, count: usize, prefix: &str, tolerate_exit: bool) -> Background {
    let count = count.to_string();
    let dir = device.dir_arg();
    let mut args = vec![
        "--count",
        &count,
        "--prefix",
        prefix,
        "--progress-every",
        "500",
        "--drain-data-dir",
        &dir,
    ];
    if tolerate_exit {
        args.push("--tolerate-exit");
    }
    Background::spawn("stream", &args, &device.wrap(&[]))
}

/// Waits until the client has had `n` answers.
fn wait_streamed(bg: &Background, n: usize) {
    let needle = format!("streamed {n}\n");
    wait_until(&format!("{n} calls answered"), SOON, || {
        bg.stderr().contains(&needle).then_some(())
    });
}

fn summary(name: &str, report: &Value, started: Instant) {
    eprintln!(
        "{name}: sent {}, answered {}, client {} s, drained in {} s after the stream, wall {:.1} s",
        report["sent"],
        answered(report).len(),
        report["secs"],
        report["drain_secs"],
        started.elapsed().as_secs_f64()
    );
}

fn check_all(report: &Value, control: &Control, prefix: &str, count: usize) {
    assert_eq!(report["drained"], true, "outbox never drained: {report}");
    let got = answered(report);
    assert_eq!(
        got.len(),
        count,
        "every call is answered: {}",
        report["errors"]
    );
    let events = control_tool_calls(&control.url);
    assert_exactly_once(&events, prefix, &got, count);
}

fn sqlite_control(dir: &std::path::Path) -> Control {
    Control::start(&format!("sqlite://{}/control.db", dir.display()), dir)
}

#[test]
fn control_plane_kill_9_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut control = sqlite_control(dir.path());
    let token = setup_org(&control, ALLOW_ALL);
    let device = Device::enroll(&control.public_url, &token);
    let started = Instant::now();
    let bg = stream(&device, BIG_STREAM, "k-", false);
    wait_streamed(&bg, 2000);
    control.kill9();
    // The proxy goes on offline on its cached bundle; events pile up in the outbox.
    wait_streamed(&bg, 3000);
    control.restart();
    let report = bg.finish(STREAM_TIMEOUT);
    summary("control plane kill -9", &report, started);
    check_all(&report, &control, "k-", BIG_STREAM);
}

#[test]
fn network_cut_mid_batch_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = flowlink_e2e::link::free_port();
    let relay = Relay::start(port);
    let public = format!("http://127.0.0.1:{}", relay.port);
    let control = Control::start_at(
        &format!("sqlite://{}/control.db", dir.path().display()),
        dir.path(),
        port,
        &public,
    );
    let token = setup_org(&control, ALLOW_ALL);
    let device = Device::enroll(&public, &token);
    let started = Instant::now();
    let bg = stream(&device, STREAM, "n-", false);
    for at in [1000, 2000] {
        wait_streamed(&bg, at);
        relay.cut();
        thread::sleep(Duration::from_secs(1));
        relay.restore();
    }
    let report = bg.finish(STREAM_TIMEOUT);
    summary("network cut twice", &report, started);
    let links = *relay.accepted.lock().expect("count");
    assert!(
        links >= 3,
        "the proxy reconnected after each cut ({links} links)"
    );
    check_all(&report, &control, "n-", STREAM);
}

#[test]
fn proxy_kill_9_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let control = sqlite_control(dir.path());
    let token = setup_org(&control, ALLOW_ALL);
    let device = Device::enroll(&control.public_url, &token);
    let started = Instant::now();
    let bg = stream(&device, STREAM, "p-", true);
    wait_streamed(&bg, 1000);
    let pid = proxy_pid(&device.data_dir).expect("the proxy is running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the proxy");
    let first = bg.finish(STREAM_TIMEOUT);
    let got = answered(&first);
    assert!(
        got.len() >= 1000 && got.len() < STREAM,
        "the stream was cut by the kill: {}",
        got.len()
    );
    // A new proxy on the same data dir replays the dead one's journal and ships everything.
    let second = link_script(
        "stream",
        &[
            "--count",
            "10",
            "--prefix",
            "q-",
            "--drain-data-dir",
            &device.dir_arg(),
        ],
        &device.wrap(&[]),
        STREAM_TIMEOUT,
    );
    summary("proxy kill -9 (first run)", &first, started);
    assert_eq!(second["drained"], true, "{second}");
    wait_outbox_empty(&device, SOON);
    let events = control_tool_calls(&control.url);
    assert_exactly_once(
        &events,
        "p-",
        &got,
        first["sent"].as_u64().expect("sent") as usize,
    );
    assert_exactly_once(&events, "q-", &answered(&second), 10);
}

#[test]
fn postgres_restart_mid_stream_loses_and_duplicates_nothing() {
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let control = Control::start(&pg.url(), dir.path());
    let token = setup_org(&control, ALLOW_ALL);
    let device = Device::enroll(&control.public_url, &token);
    let started = Instant::now();
    let bg = stream(&device, STREAM, "g-", false);
    wait_streamed(&bg, 1000);
    pg.restart();
    let report = bg.finish(STREAM_TIMEOUT);
    summary("PostgreSQL restart", &report, started);
    check_all(&report, &control, "g-", STREAM);
}
