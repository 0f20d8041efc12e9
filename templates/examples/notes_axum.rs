//! `notes_axum`: the `notes` template's service written in axum, for comparison (see `notes.rs`):
//! the same three routes, store, self-call and slow route with its own deadline.
//!
//! Run it: `cargo run -p prefork-pool-templates --example notes_axum` (127.0.0.1:8001, or `PORT`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Store(Arc<Mutex<HashMap<u64, Note>>>, u16);

#[derive(Clone, Serialize, Deserialize)]
struct Note {
    #[serde(default)]
    id: u64,
    text: String,
}

/// `POST /notes`: store a note, answer 201 with its id.
async fn create(
    State(store): State<Store>,
    Json(mut note): Json<Note>,
) -> (StatusCode, Json<Note>) {
    let mut notes = store.0.lock().unwrap();
    note.id = notes.len() as u64 + 1;
    notes.insert(note.id, note.clone());
    (StatusCode::CREATED, Json(note))
}

/// `GET /notes/{id}`: the note, or 404.
async fn show(State(store): State<Store>, Path(id): Path<u64>) -> Result<Json<Note>, StatusCode> {
    let note = store.0.lock().unwrap().get(&id).cloned();
    note.map(Json).ok_or(StatusCode::NOT_FOUND)
}

/// `GET /notes/{id}/echo`: fetch the note through our own server over HTTP (a blocking client,
/// so on a blocking thread), slowly; past 3 s the client gets 504.
async fn echo(State(store): State<Store>, Path(id): Path<u64>) -> Result<Vec<u8>, StatusCode> {
    let url = format!("http://127.0.0.1:{}/notes/{id}", store.1);
    let call = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(100));
        ureq::get(&url).call()?.into_body().read_to_vec()
    });
    match tokio::time::timeout(Duration::from_secs(3), call).await {
        Ok(Ok(Ok(body))) => Ok(body),
        Ok(_) => Err(StatusCode::BAD_GATEWAY),
        Err(_) => Err(StatusCode::GATEWAY_TIMEOUT),
    }
}

pub fn app(port: u16) -> Router {
    Router::new()
        .route("/notes", post(create))
        .route("/notes/{id}", get(show))
        .route("/notes/{id}/echo", get(echo))
        .with_state(Store(Default::default(), port))
}

#[tokio::main]
async fn main() {
    let port = std::env::var("PORT").map_or(8001, |p| p.parse().unwrap());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    axum::serve(listener, app(port)).await.unwrap();
}
