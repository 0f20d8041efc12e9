//! `notes`: a small JSON API on the sync front, as a Rust web developer writes it: three routes on
//! a `Router`, an in-memory store, a call back into its own server, a slow route with its own
//! deadline. The same service in axum is `notes_axum.rs`; `tests/notes.rs` drives both with the
//! same requests and compares their sizes (the bound: at most 1.2× axum's lines).
//!
//! One `app()` serves both modes, unchanged: one process (`Server`), or worker processes under the
//! supervisor when `WEB_CONCURRENCY` is set (each process then has its own store).
//!
//! Run it: `cargo run -p prefork-pool-templates --example notes`, then
//! `curl -i -d '{"text":"hi"}' 127.0.0.1:8000/notes` and `curl -i 127.0.0.1:8000/notes/1/echo`.
//! `PORT`, `PREFORK_BIND`, `PREFORK_THREADS`, `PREFORK_TIMEOUT` (the README's "Settings") apply.

use prefork_pool::http::types::http::StatusCode;
use prefork_pool::http::{get, post, Json, Loopback, Path, Router, Server, State};
use prefork_pool::prefork::Supervisor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Store(Arc<Mutex<HashMap<u64, Note>>>);

#[derive(Clone, Serialize, Deserialize)]
struct Note {
    #[serde(default)]
    id: u64,
    text: String,
}

/// `POST /notes`: store a note, answer 201 with its id.
fn create(State(store): State<Store>, Json(mut note): Json<Note>) -> (StatusCode, Json<Note>) {
    let mut notes = store.0.lock().unwrap();
    note.id = notes.len() as u64 + 1;
    notes.insert(note.id, note.clone());
    (StatusCode::CREATED, Json(note))
}

/// `GET /notes/{id}`: the note, or 404.
fn show(State(store): State<Store>, Path(id): Path<u64>) -> Result<Json<Note>, StatusCode> {
    let note = store.0.lock().unwrap().get(&id).cloned();
    note.map(Json).ok_or(StatusCode::NOT_FOUND)
}

/// `GET /notes/{id}/echo`: fetch the note through our own server (a self-call: on one busy
/// worker it still answers), slowly; past its own deadline of 3 s the client gets 504.
fn echo(Path(id): Path<u64>, lb: Loopback) -> Result<Vec<u8>, prefork_pool::Error> {
    std::thread::sleep(Duration::from_millis(100));
    let inner = http::Request::get(format!("/notes/{id}"))
        .body(Vec::new())
        .unwrap();
    Ok(lb.send(inner)?.into_body())
}

pub fn app() -> Router {
    Router::new()
        .route("/notes", post(create))
        .route("/notes/{id}", get(show))
        .route(
            "/notes/{id}/echo",
            get(echo).deadline(Duration::from_secs(3)),
        )
        .with_state(Store::default())
}

fn main() {
    if std::env::var_os("WEB_CONCURRENCY").is_some() {
        let supervisor = Supervisor::builder().bind("127.0.0.1:8000").with_env();
        std::process::exit(
            supervisor
                .build()
                .unwrap()
                .serve_router(|s| s, || Ok::<_, String>(app())),
        );
    }
    let server = Server::builder()
        .bind("127.0.0.1:8000")
        .with_env()
        .serve_router(app());
    server
        .unwrap()
        .serve_until_signal(Duration::from_secs(30))
        .unwrap();
}
