//! `sqlite_api`: an HTTP JSON API in front of SQLite, the template for a service whose handlers
//! call a database.
//!
//! - The web server's handlers (a pool of `web_workers`) parse JSON and call a `db` pool of
//!   `db_workers`, built with `build_with_state`: each db worker opens its own SQLite connection on
//!   its own thread when it starts, and every db call runs on one of those workers with its
//!   connection. The db pool is a bulkhead: however many web handlers call it, at most
//!   `db_workers` statements run at once; the others wait in its queue, bounded by their deadline.
//! - Per-route deadlines (`call_with`): a write may wait 2 s for the database, a read 500 ms. A
//!   missed deadline is 504, a full db queue 503.
//! - `GET /notes/{id}/summary` makes an internal call to `GET /notes/{id}` through the request's
//!   `Loopback`: in-process, no socket, no second worker needed.
//! - `GET /metrics`: the db pool's stats (workers, busy, queued, timeouts, ...) and the most db
//!   handlers seen running at once, in the Prometheus text format.
//! - What a client can make it store is bounded: at most `max_notes` notes (`MAX_NOTES`, default
//!   10,000), each from a request body of at most 16 KiB ([`MAX_NOTE_BODY`]; larger is 413 from
//!   the server, before the body is read), so the database holds at most about 160 MB of notes.
//!   Past `max_notes`, `POST /notes` is refused with 507 and a body that says why, and the first
//!   refusal is logged at `warn`. Refusing, not dropping old notes to make room, is the choice:
//!   notes are what users wrote, and deleting them to make room for anyone's new ones would lose
//!   data silently; a full store is the operator's to act on (raise `MAX_NOTES`, archive, or add
//!   per-user quotas, which a real service with accounts would have).
//!
//! Routes: `POST /notes` `{"author": "...", "text": "..."}` → 201 `{"id": n}` (507 when full);
//! `GET /notes/{id}`; `GET /authors/{author}/notes`; `GET /notes/{id}/summary`; `GET /metrics`.
//!
//! Run it: `cargo run -p prefork-pool-templates --example sqlite_api` (then the `curl` lines it
//! prints). It listens on `127.0.0.1:8000` (this machine only) unless the environment says
//! otherwise, in the crate's vocabulary (the README's "Settings"): `PORT=8000` listens on
//! `0.0.0.0:8000`, every interface, as gunicorn does (a container's published port reaches it);
//! `PREFORK_BIND` gives the exact addresses; `PREFORK_THREADS` the web workers,
//! `PREFORK_TIMEOUT`, `PREFORK_KEEP_ALIVE`, ... A value that is not allowed stops it, naming the
//! variable. `MAX_NOTES` (the template's own) is how many notes it keeps. `tests/sqlite_api.rs` drives it with concurrent clients, and fills a small store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prefork_pool::http::{HttpRequest, HttpResponse, Loopback, Server, ServerHandle};
use prefork_pool::{Error, Pool, Settings};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

/// What a handler asks the db pool.
pub enum DbReq {
    /// Add a note unless `max` notes are stored already; answered with its id, or `Full`.
    Insert {
        /// Who wrote it.
        author: String,
        /// The note.
        text: String,
        /// The most notes the store may hold.
        max: u64,
    },
    /// One note by id.
    Get(i64),
    /// Every note of an author, oldest first.
    ByAuthor(String),
}

/// A stored note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Its id.
    pub id: i64,
    /// Who wrote it.
    pub author: String,
    /// The note.
    pub text: String,
}

/// What the db pool answers.
pub enum DbResp {
    /// The new note's id.
    Inserted(i64),
    /// Not inserted: the store holds its maximum of notes already.
    Full,
    /// The note, if there is one with that id.
    Note(Option<Note>),
    /// Notes.
    Notes(Vec<Note>),
}

/// The db handler's answer: a SQLite error becomes its text.
pub type DbAnswer = Result<DbResp, String>;

/// The db handlers running now, and the most seen at once (shown on `/metrics`).
#[derive(Default)]
pub struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl InFlight {
    /// The most db handlers that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// Where and how big.
pub struct Config {
    /// The address to listen on, such as `127.0.0.1:8000`.
    pub addr: String,
    /// Workers of the web server's pool.
    pub web_workers: usize,
    /// Workers (and so SQLite connections) of the db pool.
    pub db_workers: usize,
    /// The database file.
    pub db_path: PathBuf,
    /// Spare threads for requests this process sends itself over TCP (`None`: the server's
    /// default). A test whose clients live in this process sets 0.
    pub max_spare: Option<usize>,
    /// The most notes the database holds; past that, `POST /notes` is 507 (see the module's
    /// comment).
    pub max_notes: u64,
}

/// The largest `POST /notes` body, in bytes: with `max_notes`, what bounds the database's size.
pub const MAX_NOTE_BODY: u64 = 16 * 1024;

/// The notes kept unless `MAX_NOTES` says otherwise.
pub const DEFAULT_MAX_NOTES: u64 = 10_000;

/// The running service.
pub struct App {
    /// The HTTP server.
    pub server: ServerHandle,
    /// The db pool.
    pub db: Pool<DbReq, DbAnswer>,
    /// The db handlers in flight.
    pub in_flight: Arc<InFlight>,
}

impl App {
    /// Stop the server, then the db pool.
    pub fn shutdown(&self) {
        self.server.shutdown(Duration::from_secs(10));
        self.db.shutdown(Duration::from_secs(10));
    }
}

/// Open a connection to the database file, with the schema in place.
pub fn open_db(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // Several connections write to one file: wait for the lock instead of failing at once, and
    // let readers go on while one writes.
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS notes (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             author TEXT NOT NULL,
             text TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS notes_author ON notes(author);",
    )?;
    Ok(conn)
}

/// Run one db request on a worker's connection.
fn run_db(conn: &mut Connection, req: DbReq) -> rusqlite::Result<DbResp> {
    let note = |r: &rusqlite::Row<'_>| {
        Ok(Note {
            id: r.get(0)?,
            author: r.get(1)?,
            text: r.get(2)?,
        })
    };
    match req {
        DbReq::Insert { author, text, max } => {
            // The count and the insert in one statement: one write transaction, so that two db
            // workers inserting at once cannot both take the last place.
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO notes (author, text) SELECT ?1, ?2 \
                     WHERE (SELECT count(*) FROM notes) < ?3",
                )?
                .execute(params![author, text, max])?;
            Ok(if inserted == 0 {
                DbResp::Full
            } else {
                DbResp::Inserted(conn.last_insert_rowid())
            })
        }
        DbReq::Get(id) => conn
            .prepare_cached("SELECT id, author, text FROM notes WHERE id = ?1")?
            .query_row(params![id], note)
            .optional()
            .map(DbResp::Note),
        DbReq::ByAuthor(author) => conn
            .prepare_cached("SELECT id, author, text FROM notes WHERE author = ?1 ORDER BY id")?
            .query_map(params![author], note)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map(DbResp::Notes),
    }
}

/// Start the db pool and the server, with `cfg` only (the tests).
///
/// # Errors
/// The database cannot be opened (by the first connection, or by a db worker), or the server
/// cannot bind.
pub fn start(cfg: &Config) -> Result<App, Box<dyn std::error::Error>> {
    start_with(cfg, &Settings::default())
}

/// Start the db pool and the server: `cfg` first, then what `env` sets (`Settings::from_env()`
/// in `main`: the operator's values win over the template's).
///
/// # Errors
/// As [`start`], and a refused setting (named by its variable).
pub fn start_with(cfg: &Config, env: &Settings) -> Result<App, Box<dyn std::error::Error>> {
    // The schema, once, before the workers open their connections.
    drop(open_db(&cfg.db_path)?);
    let in_flight = Arc::new(InFlight::default());
    let path = cfg.db_path.clone();
    let counting = in_flight.clone();
    let db = Pool::builder()
        .name("db")
        .workers(cfg.db_workers)
        .queue_capacity(1024)
        .deadline(Duration::from_secs(5))
        .build_with_state(
            // On each db worker's thread: its own connection, for its whole life.
            move |worker| {
                log::debug!("db worker {worker} opens {}", path.display());
                open_db(&path)
            },
            move |conn: &mut Connection, req: DbReq, _ctx| -> DbAnswer {
                let now = counting.now.fetch_add(1, Ordering::SeqCst) + 1;
                counting.peak.fetch_max(now, Ordering::SeqCst);
                let answer = run_db(conn, req).map_err(|e| e.to_string());
                counting.now.fetch_sub(1, Ordering::SeqCst);
                answer
            },
        )?;
    let routes = Routes {
        db: db.clone(),
        in_flight: in_flight.clone(),
        max_notes: cfg.max_notes,
        full_logged: AtomicBool::new(false),
    };
    let mut server = Server::builder()
        .bind(cfg.addr.as_str())
        .limit_body_bytes(MAX_NOTE_BODY)
        .pool(|p| p.name("web").workers(cfg.web_workers));
    if let Some(n) = cfg.max_spare {
        server = server.max_spare(n);
    }
    // Last: the environment's settings override the template's.
    server = server.with_settings(env);
    let server = server.serve(move |req, _ctx| routes.handle(req))?;
    Ok(App {
        server,
        db,
        in_flight,
    })
}

/// What the web handlers use.
struct Routes {
    db: Pool<DbReq, DbAnswer>,
    in_flight: Arc<InFlight>,
    max_notes: u64,
    /// Whether a 507 was logged yet (the first one is).
    full_logged: AtomicBool,
}

/// How long each kind of db call may take, queue included.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
const READ_DEADLINE: Duration = Duration::from_millis(500);

impl Routes {
    fn handle(&self, req: HttpRequest) -> HttpResponse {
        let path: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
        match (req.method().as_str(), path.as_slice()) {
            ("POST", ["notes"]) => self.create(req.body()),
            ("GET", ["notes", id]) => match id.parse() {
                Ok(id) => self.get(id),
                Err(_) => reply(400, json!({"error": "the id is a number"})),
            },
            ("GET", ["notes", id, "summary"]) => summary(&req, id),
            ("GET", ["authors", author, "notes"]) => self.by_author(author),
            ("GET", ["metrics"]) => self.metrics(),
            _ => reply(404, json!({"error": "no such route"})),
        }
    }

    /// Ask the db pool, within `deadline`; on failure, the status and body to answer.
    fn db(&self, req: DbReq, deadline: Duration) -> Result<DbResp, (u16, Value)> {
        match self.db.call_with(req, deadline) {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(sql)) => Err((500, json!({ "error": sql }))),
            Err(e) => Err((e.http_status(), json!({ "error": e.to_string() }))),
        }
    }

    fn create(&self, body: &[u8]) -> HttpResponse {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return reply(400, json!({"error": "the body is JSON"}));
        };
        let (Some(author), Some(text)) = (v["author"].as_str(), v["text"].as_str()) else {
            return reply(400, json!({"error": "author and text are strings"}));
        };
        let insert = DbReq::Insert {
            author: author.to_owned(),
            text: text.to_owned(),
            max: self.max_notes,
        };
        match self.db(insert, WRITE_DEADLINE) {
            Ok(DbResp::Inserted(id)) => reply(201, json!({ "id": id })),
            Ok(DbResp::Full) => {
                if !self.full_logged.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "the note store is full (MAX_NOTES={}): new notes are refused with 507 \
                         (logged once)",
                        self.max_notes
                    );
                }
                let why = format!(
                    "the note store is full: it holds at most {} notes (MAX_NOTES), and this one \
                     was not stored; try again once the operator has made room",
                    self.max_notes
                );
                reply(507, json!({ "error": why }))
            }
            Ok(_) => reply(500, json!({"error": "unexpected db answer"})),
            Err((status, body)) => reply(status, body),
        }
    }

    fn get(&self, id: i64) -> HttpResponse {
        match self.db(DbReq::Get(id), READ_DEADLINE) {
            Ok(DbResp::Note(Some(n))) => reply(200, note_json(&n)),
            Ok(DbResp::Note(None)) => reply(404, json!({"error": "no such note"})),
            Ok(_) => reply(500, json!({"error": "unexpected db answer"})),
            Err((status, body)) => reply(status, body),
        }
    }

    fn by_author(&self, author: &str) -> HttpResponse {
        match self.db(DbReq::ByAuthor(author.to_owned()), READ_DEADLINE) {
            Ok(DbResp::Notes(notes)) => {
                let notes: Vec<Value> = notes.iter().map(note_json).collect();
                reply(200, json!({ "notes": notes }))
            }
            Ok(_) => reply(500, json!({"error": "unexpected db answer"})),
            Err((status, body)) => reply(status, body),
        }
    }

    fn metrics(&self) -> HttpResponse {
        let mut text = self.db.stats().to_prometheus("sqlite_api");
        text.push_str(
            "# HELP sqlite_api_db_peak_in_flight The most db handlers seen running at once.\n\
             # TYPE sqlite_api_db_peak_in_flight gauge\n",
        );
        text.push_str(&format!(
            "sqlite_api_db_peak_in_flight {}\n",
            self.in_flight.peak()
        ));
        http::Response::builder()
            .status(200)
            .header("content-type", "text/plain; version=0.0.4")
            .body(text.into_bytes())
            .expect("a valid response")
    }
}

/// `GET /notes/{id}/summary`: an internal call to `GET /notes/{id}` through the `Loopback` (in
/// this process, on this worker, with this request's deadline), then a summary of its answer.
fn summary(req: &HttpRequest, id: &str) -> HttpResponse {
    let loopback = req
        .extensions()
        .get::<Loopback>()
        .expect("the server puts a Loopback in every request");
    let inner = http::Request::get(format!("/notes/{id}"))
        .body(Vec::new())
        .expect("a valid request");
    match loopback.send(inner) {
        Ok(resp) if resp.status() == 200 => {
            let note: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
            let text = note["text"].as_str().unwrap_or("");
            reply(
                200,
                json!({
                    "id": note["id"],
                    "author": note["author"],
                    "words": text.split_whitespace().count(),
                }),
            )
        }
        Ok(resp) => resp,
        Err(e) => pool_error(&e),
    }
}

fn note_json(n: &Note) -> Value {
    json!({ "id": n.id, "author": n.author, "text": n.text })
}

/// A pool error as JSON: 503 when the db queue is full, 504 past the deadline, and so on.
fn pool_error(e: &Error) -> HttpResponse {
    reply(e.http_status(), json!({ "error": e.to_string() }))
}

fn reply(status: u16, body: Value) -> HttpResponse {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string().into_bytes())
        .expect("a valid response")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sqlite_api-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = Config {
        // The template's default; PORT or PREFORK_BIND replace it (`start_with`).
        addr: "127.0.0.1:8000".to_owned(),
        web_workers: 4,
        db_workers: 2,
        db_path: dir.join("notes.db"),
        max_spare: None,
        max_notes: match std::env::var("MAX_NOTES") {
            Ok(v) => v
                .parse()
                .map_err(|_| format!("MAX_NOTES={v:?} is not a number"))?,
            Err(_) => DEFAULT_MAX_NOTES,
        },
    };
    let app = start_with(&cfg, &Settings::from_env())?;
    let mut addr = app.server.local_addrs()[0];
    if addr.ip().is_unspecified() {
        // Every interface (PORT): this machine reaches it on 127.0.0.1.
        addr.set_ip([127, 0, 0, 1].into());
    }
    println!(
        "sqlite_api on http://{addr} (database {})",
        cfg.db_path.display()
    );
    println!(
        "  curl -i -X POST -d '{{\"author\": \"ann\", \"text\": \"hello there\"}}' http://{addr}/notes"
    );
    println!("  curl -i http://{addr}/notes/1");
    println!("  curl -i http://{addr}/notes/1/summary");
    println!("  curl -i http://{addr}/authors/ann/notes");
    println!("  curl -s http://{addr}/metrics");
    app.server.join();
    app.db.shutdown(Duration::from_secs(10));
    Ok(())
}
