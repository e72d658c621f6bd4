//! The relay's behaviour at its edges, through the real binary: bad input from either side,
//! ids, cancellation, crashes and restarts, shutdown, durability.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

#[test]
fn unreadable_client_input_gets_json_rpc_errors_and_the_session_goes_on() {
    let mut p = Proxy::start(&["--max-message-bytes", "2000"], &scripted_server());
    p.initialize(json!({}));

    p.send_raw(b"this is not json");
    let e = p.recv_where("parse error", |v| v["error"]["code"] == -32700);
    assert_eq!(e["id"], Value::Null);

    p.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\xff\xfe\"}");
    let e = p.recv_where("parse error for bad UTF-8", |v| {
        v["error"]["code"] == -32700
    });
    assert!(e["error"]["message"].as_str().unwrap().contains("UTF-8"));

    p.send(json!({"hello": "world"}));
    let e = p.recv_where("invalid request", |v| v["error"]["code"] == -32600);
    assert_eq!(e["id"], Value::Null);

    let big = "y".repeat(5000);
    p.send(json!({"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"echo","arguments":{"text":big}}}));
    let e = p.response(json!(77));
    assert_eq!(e["error"]["code"], -32003);
    assert!(e["error"]["message"].as_str().unwrap().contains("2000"));

    // Still alive and relaying.
    let r = p.call(json!(2), "echo", json!({"text":"still here"}));
    assert_eq!(text_of(&r), "still here");
    // None of the bad lines reached the server.
    let log = p.server_log();
    assert!(log.iter().all(|m| m.get("hello").is_none()));
    assert!(
        !log.iter()
            .any(|m| m["params"]["arguments"]["text"] == big.as_str())
    );
    p.close_stdin();
    assert_eq!(p.wait(), 0);
}

#[test]
fn garbage_and_stray_responses_from_the_server_never_reach_the_client() {
    let mut p = Proxy::start(&[], &scripted_server());
    p.initialize(json!({}));
    let r = p.call(json!(1), "garbage", json!({}));
    assert_eq!(text_of(&r), "after garbage");
    let r = p.call(json!(2), "stray_response", json!({}));
    assert_eq!(text_of(&r), "after stray");
    // Everything the proxy wrote parsed as JSON (the harness panics otherwise); the stray
    // response is not among it.
    assert!(p.quiet_for(Duration::from_millis(300)).is_none());
    p.close_stdin();
    assert_eq!(p.wait(), 0);
    let err = p.stderr();
    assert!(err.contains("not JSON-RPC"), "{err}");
    assert!(err.contains("unknown or already answered"), "{err}");
}

#[test]
fn oversized_server_answers_are_refused_with_an_error_for_that_request() {
    let mut p = Proxy::start(&["--max-message-bytes", "4096"], &scripted_server());
    p.initialize(json!({}));
    let r = p.call(json!("big"), "huge", json!({"bytes": 100000}));
    assert_eq!(r["error"]["code"], -32003, "{r}");
    let r = p.call(json!("small"), "huge", json!({"bytes": 10}));
    assert_eq!(text_of(&r), "x".repeat(10));
    p.close_stdin();
    p.wait();
    let audit = p.audit();
    assert_eq!(audit[0]["outcome"], "protocol_error");
    assert_eq!(audit[1]["outcome"], "ok");
}

#[test]
fn ids_are_renumbered_and_mapped_back_exactly() {
    let mut p = Proxy::start(&[], &scripted_server());
    p.initialize(json!({"roots": {}}));
    // The client uses a string id; the server asks the client something using the SAME id
    // value the client used; each side must get back exactly its own ids.
    p.send(json!({"jsonrpc":"2.0","id":"5","method":"tools/call","params":{"name":"ask_client","arguments":{"id":"5"}}}));
    let req = p.recv_where("roots/list from the server", |v| {
        v["method"] == "roots/list"
    });
    assert_ne!(req["id"], json!("5"), "server request ids are renumbered");
    p.send(json!({"jsonrpc":"2.0","id":req["id"],"result":{"roots":[{"uri":"file:///tmp","name":"tmp"}]}}));
    let r = p.response(json!("5"));
    let answered: Value = serde_json::from_str(&text_of(&r)).unwrap();
    assert_eq!(answered["roots"][0]["uri"], "file:///tmp");
    // The server saw its own id on the client's answer.
    let log = p.server_log();
    assert!(
        log.iter()
            .any(|m| m["id"] == json!("5") && m.get("result").is_some())
    );
    // And it never saw the client's string id on a request.
    assert!(
        !log.iter()
            .any(|m| m["id"] == json!("5") && m.get("method").is_some())
    );
    p.close_stdin();
    p.wait();
}

#[test]
fn a_cancellation_reaches_the_request_it_names() {
    let mut p = Proxy::start(&[], &scripted_server());
    p.initialize(json!({}));
    p.send(json!({"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"slow","arguments":{"ms":5000}}}));
    // Let it reach the server, then cancel it by the client's id.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let upstream_id = loop {
        if let Some(m) = p
            .server_log()
            .into_iter()
            .find(|m| m["params"]["name"] == "slow")
        {
            break m["id"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slow call never reached the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    p.send(json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow-1","reason":"user pressed stop"}}));
    // A cancellation of an id nobody knows is not forwarded (it could hit another request).
    p.send(json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4242}}));
    let who = p.call(json!(9), "whoami", json!({}));
    let who: Value = serde_json::from_str(&text_of(&who)).unwrap();
    assert_eq!(who["cancelled"], json!([upstream_id]), "server saw: {who}");
    let log = p.server_log();
    let cancel = log
        .iter()
        .find(|m| m["method"] == "notifications/cancelled")
        .unwrap();
    assert_eq!(cancel["params"]["reason"], "user pressed stop");
    p.close_stdin();
    p.wait();
    let audit = p.audit();
    assert_eq!(audit[0]["tool"], "slow");
    assert_eq!(audit[0]["outcome"], "cancelled");
    assert_eq!(audit[0]["error"], "user pressed stop");
}

#[test]
fn batches_are_relayed_as_batches() {
    let mut p = Proxy::start(&[], &scripted_server());
    p.initialize(json!({}));
    p.send(json!([
        {"jsonrpc":"2.0","id":"a","method":"ping"},
        {"jsonrpc":"2.0","id":"b","method":"tools/list"}
    ]));
    let mut got = Vec::new();
    while got.len() < 2 {
        let v = p.recv_any();
        match v {
            Value::Array(items) => got.extend(items),
            other => got.push(other),
        }
    }
    let ids: Vec<_> = got.iter().map(|v| v["id"].clone()).collect();
    assert!(
        ids.contains(&json!("a")) && ids.contains(&json!("b")),
        "{ids:?}"
    );
    // The server received one batch line with both requests.
    let log = p.server_log();
    assert!(log.iter().any(|m| m["method"] == "ping"));
    p.close_stdin();
    p.wait();
}

#[test]
fn a_crashed_server_answers_in_flight_requests_and_comes_back_initialised() {
    let mut p = Proxy::start(&[], &scripted_server());
    p.initialize(json!({}));
    let before: Value =
        serde_json::from_str(&text_of(&p.call(json!(1), "whoami", json!({})))).unwrap();
    p.send(json!({"jsonrpc":"2.0","id":"s","method":"tools/call","params":{"name":"slow","arguments":{"ms":10000}}}));
    let r = p.call(json!(2), "crash", json!({"code": 3}));
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exit status 3")
    );
    let r = p.response(json!("s"));
    assert_eq!(r["error"]["code"], -32001);
    p.wait_stderr("restarting in");
    // The next call goes to a new process that got the client's initialize replayed.
    let after: Value =
        serde_json::from_str(&text_of(&p.call(json!(3), "whoami", json!({})))).unwrap();
    assert_ne!(before["pid"], after["pid"]);
    assert_eq!(after["initializes"], 1);
    p.wait_stderr("re-initialised");
    p.close_stdin();
    assert_eq!(p.wait(), 0);
    let audit = p.audit();
    let outcomes: Vec<_> = audit.iter().map(|r| r["outcome"].clone()).collect();
    assert_eq!(
        outcomes,
        vec![
            json!("ok"),
            json!("server_exited"),
            json!("server_exited"),
            json!("ok")
        ]
    );
}

#[test]
fn restarts_are_limited_per_minute() {
    let mut p = Proxy::start(&["--max-restarts-per-minute", "1"], &scripted_server());
    p.initialize(json!({}));
    let r = p.call(json!(1), "crash", json!({"code": 4}));
    assert_eq!(r["error"]["code"], -32001);
    p.wait_stderr("restarting in");
    let r = p.call(json!(2), "crash", json!({"code": 5}));
    assert_eq!(r["error"]["code"], -32001);
    assert_eq!(
        p.wait(),
        5,
        "the proxy gives up with the server's exit status"
    );
    assert!(p.stderr().contains("giving up"));
}

#[test]
fn a_server_that_dies_before_the_session_begins_passes_its_status_on() {
    let mut p = Proxy::start(&[], &["sh".into(), "-c".into(), "exit 7".into()]);
    assert_eq!(p.wait(), 7);
    let mut p = Proxy::start(&[], &["/nonexistent/mcp-server".into()]);
    assert_eq!(p.wait(), 127);
    assert!(p.stderr().contains("could not start MCP server"));
}

#[test]
fn end_of_input_stops_the_server_and_its_grandchildren() {
    let mut p = Proxy::start(&[], &scripted_server());
    p.initialize(json!({}));
    let pid: i32 = text_of(&p.call(json!(1), "grandchild", json!({})))
        .parse()
        .unwrap();
    assert!(process_alive(pid));
    p.close_stdin();
    assert_eq!(p.wait(), 0);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!process_alive(pid), "grandchild {pid} outlived the proxy");
}

#[test]
fn sigterm_stops_the_server_and_its_grandchildren() {
    let mut p = Proxy::start(&[], &scripted_server());
    p.initialize(json!({}));
    let pid: i32 = text_of(&p.call(json!(1), "grandchild", json!({})))
        .parse()
        .unwrap();
    let proxy_pid = p.child.id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    p.wait();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!process_alive(pid), "grandchild {pid} outlived the proxy");
}

#[test]
fn a_client_that_leaves_mid_call_is_recorded() {
    let mut p = Proxy::start(&["--shutdown-grace-ms", "300"], &scripted_server());
    p.initialize(json!({}));
    p.send(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{"ms":20000}}}));
    // Wait until the call is on its way, then hang up.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !p.server_log().iter().any(|m| m["params"]["name"] == "slow") {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    p.close_stdin();
    p.wait();
    let audit = p.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["outcome"], "client_gone");
}

#[test]
fn kill_dash_nine_loses_no_decided_call() {
    let mut p = Proxy::start(&[], &scripted_server());
    p.initialize(json!({}));
    // Fire calls without waiting, then kill the proxy while answers are still coming.
    for i in 0..200 {
        p.send(json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"echo","arguments":{"text":format!("n{i}")}}}));
    }
    let mut answered = Vec::new();
    while answered.len() < 50 {
        let v = p.recv_any();
        if let Some(id) = v["id"].as_i64() {
            answered.push(id);
        }
    }
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    // Every call the server answered was forwarded, so it must have been committed first.
    let texts: Vec<String> = p
        .audit()
        .iter()
        .map(|r| r["arguments"]["text"].as_str().unwrap().to_owned())
        .collect();
    for id in answered {
        assert!(
            texts.contains(&format!("n{id}")),
            "answered call {id} missing from the audit store"
        );
    }
}

#[test]
fn the_session_record_has_both_peers() {
    let mut p = Proxy::start(&["--name", "scripted"], &scripted_server());
    p.initialize(json!({"elicitation": {}}));
    p.call(json!(1), "echo", json!({"text": "x"}));
    p.close_stdin();
    p.wait();
    let conn = rusqlite::Connection::open(p.data_dir().join("audit.sqlite3")).unwrap();
    let (client, server, version): (String, String, String) = conn
        .query_row(
            "SELECT client_name, server_name, protocol_version FROM sessions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(client, "relay-test");
    assert_eq!(server, "scripted");
    assert_eq!(version, "2025-06-18");
    let a = p.audit();
    assert_eq!(a[0]["agent"], "relay-test");
    assert_eq!(a[0]["service"], "scripted");
}

#[test]
fn what_no_rule_touches_arrives_byte_for_byte_and_in_order() {
    let mut p = Proxy::start(&[], &scripted_server());
    p.initialize(json!({}));
    // Odd spacing, number spellings, escapes, unknown members and trace context: a notification
    // is forwarded as the exact bytes the client wrote; a request differs only in its id.
    let note = r#"{"jsonrpc":"2.0", "method":"notifications/x-custom","params":{"n":1.50,"big":123456789012345678901234567890,"s":"\u00e9\n","_meta":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},"x-extension":{"k":[]}}"#;
    let req = r#"{"jsonrpc":"2.0","id":"q-1","method":"tools/call","params":{"name":"echo","arguments":{"text":"t","n":1.50},"_meta":{"progressToken":"p1","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}"#;
    p.send_raw(note.as_bytes());
    p.send_raw(req.as_bytes());
    for i in 0..20 {
        if i % 2 == 0 {
            p.send(json!({"jsonrpc":"2.0","method":"notifications/x-seq","params":{"i": i}}));
        } else {
            p.send(json!({"jsonrpc":"2.0","id": format!("seq-{i}"),"method":"ping"}));
        }
    }
    p.response(json!("q-1"));
    p.response(json!("seq-19"));
    let raw = p.server_raw();
    assert!(
        raw.iter().any(|l| l == note),
        "notification altered: {raw:#?}"
    );
    let forwarded = raw
        .iter()
        .find(|l| l.contains("\"name\":\"echo\""))
        .expect("the call reached the server");
    let up_id = serde_json::from_str::<Value>(forwarded).unwrap()["id"].clone();
    assert_eq!(
        *forwarded,
        req.replace("\"id\":\"q-1\"", &format!("\"id\":{up_id}")),
        "only the id may change"
    );
    // Order per direction: the sequence reached the server as it was sent.
    let log = p.server_log();
    let notes: Vec<i64> = log
        .iter()
        .filter_map(|m| m["params"]["i"].as_i64())
        .collect();
    let pings: Vec<i64> = log
        .iter()
        .filter(|m| m["method"] == "ping")
        .filter_map(|m| m["id"].as_i64())
        .collect();
    let sent_pings: Vec<Value> = p
        .server_log()
        .iter()
        .filter(|m| m["method"] == "ping" || m["method"] == "notifications/x-seq")
        .map(|m| m["method"].clone())
        .collect();
    assert_eq!(sent_pings.len(), 20);
    for (i, m) in sent_pings.iter().enumerate() {
        let expected = if i % 2 == 0 {
            "notifications/x-seq"
        } else {
            "ping"
        };
        assert_eq!(m, expected, "message {i} out of order");
    }
    assert_eq!(notes, (0..20).step_by(2).collect::<Vec<i64>>());
    assert!(pings.windows(2).all(|w| w[0] < w[1]), "{pings:?}");
    p.close_stdin();
    p.wait();
}
