//! Drives `examples/sqlite_api.rs` with concurrent clients over loopback TCP: every note written is
//! read back (by id, by author, and through the Loopback summary), and the db pool never runs more
//! statements at once than it has workers (connections).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

#[path = "../examples/sqlite_api.rs"]
#[allow(dead_code)]
mod app;

const CLIENTS: usize = 8;
const NOTES_EACH: usize = 25;
const DB_WORKERS: usize = 3;

/// One request on a new connection; the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[test]
fn concurrent_clients_read_back_every_note_and_the_db_bound_holds() {
    let dir = std::env::temp_dir().join(format!("sqlite_api-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = app::Config {
        addr: "127.0.0.1:0".to_owned(),
        web_workers: 4,
        db_workers: DB_WORKERS,
        db_path: dir.join("notes.db"),
        // The clients live in this process: they are not self-calls to rescue.
        max_spare: Some(0),
        max_notes: app::DEFAULT_MAX_NOTES,
    };
    let running = app::start(&cfg).expect("the app starts");
    let addr = running.server.local_addrs()[0];

    let written: Vec<Vec<(i64, String)>> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                s.spawn(move || {
                    let author = format!("client{c}");
                    let mut mine = Vec::new();
                    for i in 0..NOTES_EACH {
                        let text = format!("note {i} of {author}: the quick brown fox");
                        let body = json!({ "author": author, "text": text }).to_string();
                        let (status, answer) = request(addr, "POST", "/notes", &body);
                        assert_eq!(status, 201, "{answer}");
                        let id = json_of(&answer)["id"].as_i64().expect("an id");
                        mine.push((id, text));
                    }
                    // Read each back by id, while the other clients still write.
                    for (id, text) in &mine {
                        let (status, answer) = request(addr, "GET", &format!("/notes/{id}"), "");
                        assert_eq!(status, 200, "{answer}");
                        let note = json_of(&answer);
                        assert_eq!(note["text"], text.as_str());
                        assert_eq!(note["author"], author.as_str());
                    }
                    mine
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });

    for (c, mine) in written.iter().enumerate() {
        let (status, answer) = request(addr, "GET", &format!("/authors/client{c}/notes"), "");
        assert_eq!(status, 200, "{answer}");
        let listed: Vec<(i64, String)> = json_of(&answer)["notes"]
            .as_array()
            .expect("notes")
            .iter()
            .map(|n| {
                (
                    n["id"].as_i64().unwrap(),
                    n["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(&listed, mine, "client{c}'s notes, all of them, in order");
    }
    let total: usize = written.iter().map(Vec::len).sum();
    assert_eq!(total, CLIENTS * NOTES_EACH);

    // The internal call through the Loopback.
    let (id, _) = &written[0][0];
    let (status, answer) = request(addr, "GET", &format!("/notes/{id}/summary"), "");
    assert_eq!(status, 200, "{answer}");
    let summary = json_of(&answer);
    assert_eq!(summary["id"], *id);
    assert_eq!(summary["words"], 8);
    let (status, _) = request(addr, "GET", "/notes/999999/summary", "");
    assert_eq!(status, 404, "the inner answer is relayed");

    // The bound, from the app and from /metrics.
    let peak = running.in_flight.peak();
    assert!(
        (1..=DB_WORKERS).contains(&peak),
        "at most {DB_WORKERS} db statements at once, saw {peak}"
    );
    let (status, metrics) = request(addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!(
            "sqlite_api_pool_workers{{pool=\"db\"}} {DB_WORKERS}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("sqlite_api_pool_workers_without_state{pool=\"db\"} 0"));
    let shown: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sqlite_api_db_peak_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the peak on /metrics");
    assert!(shown <= DB_WORKERS, "{metrics}");
    let stats = running.db.stats();
    assert_eq!(stats.timed_out, 0, "{stats:?}");
    assert_eq!(
        stats.reentrant_inline, 0,
        "no db call ran off the db workers"
    );

    running.shutdown();
    std::fs::remove_dir_all(&dir).ok();
}

/// With `max_notes: 3`, the fourth note is refused with 507 and a body that says why, and not
/// stored; the three are still served; a body over `MAX_NOTE_BODY` is 413 and not stored either.
#[test]
fn what_a_client_can_store_is_bounded() {
    let dir = std::env::temp_dir().join(format!("sqlite_api-bound-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = app::Config {
        addr: "127.0.0.1:0".to_owned(),
        web_workers: 2,
        db_workers: 2,
        db_path: dir.join("notes.db"),
        max_spare: Some(0),
        max_notes: 3,
    };
    let running = app::start(&cfg).expect("the app starts");
    let addr = running.server.local_addrs()[0];
    let note = |text: &str| json!({ "author": "ann", "text": text }).to_string();
    let big = "x".repeat(app::MAX_NOTE_BODY as usize);
    let (status, answer) = request(addr, "POST", "/notes", &note(&big));
    assert_eq!(status, 413, "{answer}");
    for i in 1..=3 {
        let (status, answer) = request(addr, "POST", "/notes", &note(&format!("note {i}")));
        assert_eq!(status, 201, "{answer}");
    }
    for _ in 0..2 {
        let (status, answer) = request(addr, "POST", "/notes", &note("one too many"));
        assert_eq!(status, 507, "{answer}");
        let error = json_of(&answer)["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.contains("full") && error.contains("MAX_NOTES"),
            "{error}"
        );
    }
    let (status, answer) = request(addr, "GET", "/authors/ann/notes", "");
    assert_eq!(status, 200, "{answer}");
    let texts: Vec<String> = json_of(&answer)["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .map(|n| n["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["note 1", "note 2", "note 3"]);
    running.shutdown();
    std::fs::remove_dir_all(&dir).ok();
}
