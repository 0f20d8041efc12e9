//! The HTTP/1.1 front end (feature `http`): a [`Server`] whose [`Pool`](crate::Pool) runs your
//! handler on the worker thread that read the request.
//!
//! ```text
//!  clients ──► reactor thread (mio): accept · timers · drain · the lane's take-over
//!                 │ every connection goes into
//!                 ▼
//!              connection lane: one epoll set, each connection watched edge-triggered
//!                 │ an idle worker waits here, takes one ready connection,
//!                 ▼ reads · parses · checks limits (a slow client: a buffer, not a handler)
//!              Pool<HttpRequest, HttpResponse>: the request is lent back to that worker ──► handler
//!                 deadlines · watchdog · re-entrancy guard · bounded queue
//!                 │ the answer: written by the thread that completed it, no epoll_ctl
//!                 ▼
//!              lane (next request, or the rest of a long answer)
//! ```
//!
//! A handler only ever sees a complete request: the thread that takes a connection from the lane
//! reads and parses what is there and goes back to waiting when the request is not complete yet,
//! so a slow client costs a buffer, never a worker, and an idle keep-alive connection costs one
//! file descriptor. A request that finds a worker idle costs no hand-off between threads: the
//! worker that reads it runs it (measured: 3 system calls per kept-alive request, `epoll_wait`,
//! `read` and `write`, the connection registered once; 4 when each request re-armed it, and 5
//! with 2.5 context switches when a reactor thread read every request and woke a worker).
//! When every worker is busy and none has taken a connection for 2 ms, the reactor takes the
//! waiting connections itself and hands their requests on as before: to the pool's queue (a full
//! queue: 503), to a spare thread when the client is this process (a handler calling its own
//! server), or to the health routes, which answer while every worker is busy.
//!
//! # A server in ten lines
//!
//! ```
//! use prefork_pool::http::types::http::StatusCode;
//! use prefork_pool::http::{RawJson, Server};
//! use std::io::{Read, Write};
//! use std::time::Duration;
//!
//! let server = Server::builder()
//!     .bind("127.0.0.1:0")               // port 0: any free port, see local_addrs()
//!     .pool(|p| p
//!         .workers(2)                        // the Pool's worker threads
//!         .deadline(Duration::from_secs(5))) // per request; past it the client gets 504
//!     .serve(|req, _ctx| match req.uri().path() {
//!         "/" => Ok(RawJson(r#"{"hello":"world"}"#)),
//!         other => Err((StatusCode::NOT_FOUND, format!("no page at {other}\n"))),
//!     })
//!     .unwrap();
//!
//! // Any HTTP client works; here, a raw socket.
//! let mut s = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
//! s.write_all(b"GET /there HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! s.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"));
//! assert!(answer.contains("content-type: text/plain; charset=utf-8\r\n"));
//! assert!(answer.ends_with("no page at /there\n"));
//!
//! // Graceful: finishes what was read, then stops every thread.
//! server.shutdown(Duration::from_secs(5));
//! ```
//!
//! A program that serves ends with [`ServerHandle::serve_until_signal`]: it serves until SIGTERM
//! or Ctrl-C, then drains (see [Running as a service](#running-as-a-service)).
//! `examples/hello_loopback.rs` is a complete template (routes, JSON with serde_json, errors with
//! `?`, a logger, stop on SIGTERM).
//!
//! The crate logs through the [`log`](https://docs.rs/log) facade: install a logger (e.g.
//! `env_logger`) or you see nothing, not even the access log. Or use the crate's own log sink,
//! no logger crate needed: [`access_log_file`](ServerBuilder::access_log_file),
//! [`error_log_file`](ServerBuilder::error_log_file) (files or `-`, reopened on SIGUSR1; see
//! [`crate::log_sink`]).
//!
//! # Handlers
//!
//! A handler is any `Fn(HttpRequest, &Context) -> R` ([`Handler`]) whose `R` is
//! [`IntoResponse`]: an [`HttpResponse`], a `String` or `&'static str` (text), [`RawJson`] or
//! [`Json<T>`](Json) (JSON), `(StatusCode, body)`, headers with a body (`([(name, value)], body)`,
//! `(StatusCode, headers, body)`), a [`StatusCode`](types::http::StatusCode), a
//! [`crate::Error`], or a `Result` of two of them, so that a handler can use `?` on any error type
//! that is `IntoResponse` (implement it for your own: the set is open), or on any error at all
//! with [`HttpError`] (a 500, logged). Requests and responses
//! are the `http` crate's types, re-exported as [`types::http`] so that your `Cargo.toml` need not
//! name it with the matching version (write `use prefork_pool::http::types::http;`). A closure
//! written in the call to [`serve`](ServerBuilder::serve) needs no annotations; one stored in a
//! variable first goes through [`handler`]. The same handler serves in process mode
//! ([`Supervisor::serve_http`](crate::prefork::Supervisor::serve_http)).
//!
//! # Routes and extractors
//!
//! A [`Router`] dispatches by path and method, as axum's: `Router::new().route("/notes/{id}",
//! get(show).post(update))`, [`nest`](Router::nest), [`fallback`](Router::fallback), 404 for an
//! unknown path and 405 with `Allow` for a known one with another method. Its handlers are plain
//! sync functions whose arguments are extractors ([`Path`], [`Query`], [`Json`], [`State`],
//! [`ClientAddr`], [`Loopback`], `HeaderMap`, the body as `Vec<u8>`/`String`/`Bytes`, ...; see
//! [`RouteHandler`]); an extractor that refuses answers 400, 415 or 422 with a body saying which
//! one and why ([`Rejection`]). A route may carry its own
//! [`deadline`](MethodRouter::deadline). Serve it with
//! [`serve_router`](ServerBuilder::serve_router), or in process mode with
//! [`Supervisor::serve_router`](crate::prefork::Supervisor::serve_router).
//!
//! ```
//! use prefork_pool::http::types::http::{self, StatusCode};
//! use prefork_pool::http::{get, post, Json, Path, Router, Server};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, Serialize)]
//! struct Note { title: String }
//!
//! fn show(Path(id): Path<u64>) -> Json<Note> {
//!     Json(Note { title: format!("note {id}") })
//! }
//! fn create(Json(note): Json<Note>) -> (StatusCode, Json<Note>) {
//!     (StatusCode::CREATED, Json(note))
//! }
//!
//! let app = Router::new().route("/notes/{id}", get(show)).route("/notes", post(create));
//! let server = Server::builder().bind("127.0.0.1:0").serve_router(app).unwrap();
//! let lb = server.loopback();
//! let r = lb.send(http::Request::get("/notes/7").body(Vec::new()).unwrap()).unwrap();
//! assert_eq!(r.body(), br#"{"title":"note 7"}"#);
//! let r = lb.send(http::Request::delete("/notes/7").body(Vec::new()).unwrap()).unwrap();
//! assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, "GET, HEAD"));
//! let bad = http::Request::post("/notes").header("content-type", "application/json");
//! let r = lb.send(bad.body(br#"{"name":1}"#.to_vec()).unwrap()).unwrap();
//! assert_eq!(r.status(), 422); // "Json: the body's JSON does not fit: missing field `title` ..."
//! server.shutdown(std::time::Duration::from_secs(5));
//! ```
//!
//! # Calling yourself without deadlock: [`Loopback`]
//!
//! With gunicorn and one sync worker, a handler that makes an HTTP request to its own server hangs
//! until the worker timeout: the only worker waits for a request that needs that worker. Every
//! request here carries a [`Loopback`] in its extensions; `loopback.send(request)` runs the
//! server's handler in-process through the Pool, and a call from inside a handler runs inline on
//! the calling worker, with the caller's remaining deadline. No socket, no parsing, no second
//! worker needed.
//!
//! ```
//! use prefork_pool::http::types::http;
//! use prefork_pool::http::{Loopback, Server};
//!
//! let server = Server::builder()
//!     .bind("127.0.0.1:0")
//!     .pool(|p| p.workers(1)) // the case that deadlocks under gunicorn
//!     .serve(|req, _ctx| match req.uri().path() {
//!         "/call_hello_world" => {
//!             let lb = req.extensions().get::<Loopback>().unwrap();
//!             let inner = http::Request::post("/hello_world").body(Vec::new()).unwrap();
//!             lb.send(inner).unwrap_or_else(|e| {
//!                 prefork_pool::http::error_response(e.http_status(), &e.to_string())
//!             })
//!         }
//!         _ => http::Response::builder().status(201).body(b"{}".to_vec()).unwrap(),
//!     })
//!     .unwrap();
//! let r = server
//!     .loopback()
//!     .send(http::Request::post("/call_hello_world").body(Vec::new()).unwrap())
//!     .unwrap();
//! assert_eq!(r.status(), 201);
//! server.shutdown(std::time::Duration::from_secs(5));
//! ```
//!
//! A handler that calls its own server with an ordinary HTTP client (the code as people write it)
//! is rescued too, on the slow path: when no worker is idle and the client is on this host (a
//! loopback address or the server's own address, or a Unix socket), the server finds out which
//! process the client is, once per connection: over TCP, on a lookup thread of its own (never on
//! the thread that serves the other connections), it asks the kernel for the client's socket by
//! the connection's addresses (Linux `sock_diag`) and looks it up among this process's own
//! descriptors; over a Unix socket it takes the client's `SO_PEERCRED` pid. A
//! request this process sent itself runs at once on one of a few spare threads (see
//! [`max_spare`](ServerBuilder::max_spare); beyond them it waits up to a second for one, then is answered 503), the route is
//! logged once at `warn` with the fix (use the `Loopback`, or make the call asynchronous), and
//! [`ServerHandle::self_calls`] counts them. In process mode a request from a sibling worker
//! process (see [`sibling_pids`](ServerBuilder::sibling_pids)) is treated the same way: several
//! processes share the listener, so a call to its own service may land on a sibling whose
//! workers are all busy with such calls too.
//!
//! # Runaway recursion: 508
//!
//! A route that calls itself without end is cut after [`max_depth`](ServerBuilder::max_depth)
//! (default 32) nested calls with [`Error::LoopDetected`](crate::Error::LoopDetected), answered 508
//! Loop Detected. The depth travels in the [`DEPTH_HEADER`] (`X-Prefork-Depth`): the [`Loopback`]
//! sets it, and the server reads it on every request from this host, including those that come
//! over TCP (from a loopback address or the server's own address) or a Unix socket. From any
//! other client the header is removed before the request is handled, so a remote client cannot
//! make its requests 508.
//!
//! # What is stuck
//!
//! When every worker has been busy and no job has completed for
//! [`stuck_after`](ServerBuilder::stuck_after) (default 1 s), one `warn` line per episode lists
//! each busy worker, its request line and how long it has run (a [`StuckReport`]);
//! [`ServerHandle::stuck_report`] gives the same on demand. This is the line a gunicorn user never
//! gets before `WORKER TIMEOUT`.
//!
//! # What the server answers on its own
//!
//! Each answer has a short `text/plain` body that says why, or whatever the application's
//! [`error_response`](ServerBuilder::error_response) hook renders (JSON for an API; the status
//! stays, and a 503 keeps `Retry-After`). A protocol refusal (400, 408, 413,
//! 414, 417, 431, 501, 505) closes the connection after a *lingering close*: the server shuts its
//! side and reads what the client still sends for up to 2 s, so the client reads the answer
//! instead of a reset. An answer for a Pool error (503, 504, 500, 508) keeps the connection.
//!
//! | Status | When | Setting (default) |
//! |---|---|---|
//! | 400 | malformed head, refused at its first bad byte (see below); a request target in a form its method cannot have (`GET abc`, `GET *`, `CONNECT /`); missing `Host` in HTTP/1.1, two `Host` headers, one naming two hosts (`Host: a, b`) or one that is not `host[:port]` (`Host: a b`); two `Expect` headers; `Content-Length` with `Transfer-Encoding`; two `Content-Length` fields or a list in one, even of equal values; `Transfer-Encoding` not ending in `chunked`, or in an HTTP/1.0 request; bad chunk size or chunk framing; an empty chunk extension (`2;`), one with an empty value, an unterminated quoted value or a control byte (NUL...); a trailer line without a colon or with a control byte | |
//! | 408 | head not complete in time (slow-loris), no body bytes for too long, or a body slower than the rate floor (a slow upload: `body_timeout` after its head plus 1 s per `min_body_rate` bytes received) | [`head_timeout`](ServerBuilder::head_timeout) (10 s), [`body_timeout`](ServerBuilder::body_timeout) (30 s), [`min_body_rate`](ServerBuilder::min_body_rate) (500 B/s) |
//! | 413 | body too large (at once when `Content-Length` says so, even with `Expect: 100-continue`) | [`limit_body_bytes`](ServerBuilder::limit_body_bytes) (10 MiB) |
//! | 414 | request line too long | [`limit_request_line`](ServerBuilder::limit_request_line) (4094) |
//! | 417 | an `Expect` other than `100-continue` | |
//! | 431 | too many header fields, a field too long, the head too large, or chunked trailers over 8 KiB | [`limit_request_fields`](ServerBuilder::limit_request_fields) (100), [`limit_request_field_size`](ServerBuilder::limit_request_field_size) (8190), [`limit_head_bytes`](ServerBuilder::limit_head_bytes) (64 KiB) |
//! | 501 | a transfer coding other than `chunked` (e.g. `gzip, chunked`); a `CONNECT` (the server is not a proxy: it cannot open a tunnel) | |
//! | 505 | an HTTP version other than 1.0 and 1.1 (`HTTP/2.0`, `HTTP/5.6`), at its last digit; a version not of the form `HTTP/d.d` is a malformed head (400) | |
//! | 503 + `Retry-After: 1` | the Pool's queue is full ([`Error::Overloaded`](crate::Error::Overloaded)), or it is shutting down | [`queue_capacity`](crate::PoolBuilder::queue_capacity), through [`pool`](ServerBuilder::pool) |
//! | 504 | the request's deadline passed ([`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded)) | [`deadline`](crate::PoolBuilder::deadline), through [`pool`](ServerBuilder::pool) (30 s); per route, [`deadline_for`](ServerBuilder::deadline_for) (none) |
//! | 500 | the handler panicked (the message goes to the log, not to the client) | |
//! | 508 | a chain of nested calls too deep ([`Error::LoopDetected`](crate::Error::LoopDetected)): the request's [`DEPTH_HEADER`] (honoured from this host only) is past the maximum | [`max_depth`](ServerBuilder::max_depth) (32) |
//! | 503 + `Retry-After: 1` | a request this process (or a sibling worker process) sent itself over TCP or a Unix socket while every worker and every spare thread was busy | [`max_spare`](ServerBuilder::max_spare) (the worker count) |
//!
//! Pool errors are logged on target `prefork_pool::http` (500 at `error`, others at `warn`), each
//! with the request it answers: `` `GET /api/report` from 10.0.0.7: answered 504: pool `http`: job
//! 42 missed its deadline of 2s ... ``, whose job number is the one in the Pool's own line (the
//! worker retired, on target `prefork_pool::pool::watchdog`). Protocol refusals are logged at
//! `debug`. An error a handler returns itself (`Err(prefork_pool::Error)`) is answered the same
//! way and not logged: the access log shows its status.
//! The 508 for a client-sent [`DEPTH_HEADER`] is logged at most once per 10 s, with the count of
//! those not logged since.
//!
//! ## Strict parsing, as llhttp's strict mode and h11
//!
//! The head is checked byte by byte as it arrives, so a malformed head is answered 400 (or 505)
//! and closed at the first byte that makes it so, without waiting for a blank line or the head
//! timeout: a bare CR or bare LF anywhere in the head; whitespace before the request line or
//! before the first header field (and obs-fold); anything but single spaces between the method,
//! the target and `HTTP/d.d`; a method or field name that is not a token; a raw control or
//! non-ASCII byte in the request target; a field line without a colon; NUL, another control
//! byte or DEL in a field value. The size limits are checked at the byte that passes them too.
//!
//! So is what can be told before the end of the head, at the byte that tells it: a request
//! target in a form its method cannot have (RFC 9112 3.2: a path `/...` or an absolute URI
//! `scheme://...`; `*` for `OPTIONS` only; `host:port`, and only that, for `CONNECT`); a `Host`
//! value that is not `host[:port]`; a second `Host` or `Content-Length` field (at its colon); a
//! `Content-Length` that is not one decimal number of at most 19 significant digits. A
//! `Content-Length` over the body limit is 413 at the end of its line.
//!
//! Choices, where the strict parsers and the RFCs leave room:
//! - **`Host`** is `uri-host [ ":" port ]` (RFC 9110 7.2): a name (letters, digits, `-._~`, the
//!   sub-delims but the comma, `%XX`), an IPv4 address or a bracketed IPv6 literal, with an
//!   optional port of digits and whitespace around. An empty `Host` is accepted (RFC 9112 3.2:
//!   what a client with no authority sends); a port with no host is not. With an absolute-form
//!   target the `Host` is still checked, though the target's authority is the one that counts.
//! - **`CONNECT`** with a proper `host:port` is answered 501 by the server itself and the
//!   connection closed: the server is not a proxy, and a handler's 2xx would tell the client a
//!   tunnel was open (it used to reach the handler).
//! - **Two `Content-Length` fields**, or a list in one (`3, 3`), are 400 even when the values
//!   agree, as in llhttp's strict mode (RFC 9110 8.6 allows either).
//! - **obs-text in field values** (bytes 0x80-0xFF) is accepted, as RFC 9110 5.5 allows it as
//!   opaque data and llhttp and h11 accept it: the handler gets the bytes
//!   (`HeaderValue::as_bytes`; `to_str` fails on them), and the access log writes them escaped.
//!   It is refused in field names and in the request target.
//! - **`"`, `<`, `>` and a backquote in the request target** are accepted (llhttp and h11 accept
//!   every visible ASCII byte there). `http::Uri` cannot hold some of them, so a target it
//!   refuses raw reaches the handler with those four percent-encoded (`%22`, `%3C`, `%3E`,
//!   `%60`), which means the same to anything that decodes the URI; one it accepts (e.g.
//!   `/a"b`) reaches the handler unchanged.
//! - **Zero-padded numbers** (`Content-Length: 007`, chunk size `0003`) are accepted, as llhttp
//!   does: the value still parses exactly, so no two readers can disagree on where the body ends
//!   (the smuggling risk is nil). At most 19 significant decimal digits for `Content-Length` and
//!   15 hex digits for a chunk size (64 digits in all); more is 400 (a `Content-Length` over the
//!   body limit is 413).
//!
//! # Connections
//!
//! - HTTP/1.1 connections are kept alive unless the request (or the handler's answer) says
//!   `Connection: close`; HTTP/1.0 ones close unless the request asks for `keep-alive`. An idle
//!   kept-alive connection is closed quietly after
//!   [`keepalive_timeout`](ServerBuilder::keepalive_timeout) (5 s).
//! - A client that said it closes (its request's `Connection: close`, or HTTP/1.0 without
//!   `keep-alive`) is closed as soon as its answer is written: it sends nothing more on the
//!   connection (RFC 9112 §9.6), so nothing is waited for. A close the server decides (the
//!   handler's `Connection: close`, a refusal, the drain, process mode's keep-alive cap) and a
//!   TLS connection's is a *lingering close*: our side shut, what the client still sends read and
//!   dropped until it closes too, so that a request already on the wire meets an end of file,
//!   never a reset that could lose the answer before it.
//! - Pipelined requests are answered in order: the next request on a connection is parsed only
//!   once the current one is answered.
//! - `Expect: 100-continue` gets `100 Continue` when the head is parsed and the body has not
//!   started to arrive.
//! - Answers always carry `Date` (unless the handler set one) and a `Content-Length` computed from
//!   the body; the handler's `Content-Length`, `Transfer-Encoding` and `Connection` headers are
//!   replaced (a `HEAD` answer with an empty body keeps the handler's `Content-Length`). No
//!   `Server` header is added.
//! - The handler gets the request as received: its `Transfer-Encoding: chunked` header stays, and
//!   the body is the decoded bytes (trailers are read and dropped). Its extensions hold a
//!   [`Loopback`] and the client's [`PeerAddr`].
//! - Timers are checked every 100 ms, so a timeout fires up to 100 ms late.
//! - An accept error (EMFILE, ENFILE, ...) is logged at `warn` and accepting pauses for 100 ms;
//!   the warning is written at most once per 10 s, with the count of those not written since.
//!   Per-connection errors (ECONNABORTED, EPROTO, ...) are skipped.
//! - The thread that completes a request (the worker, or the watchdog for a 504) serialises the
//!   answer and writes it straight to the socket when the socket takes it whole; the connection
//!   then waits in the lane for what it needs next: its next request, or room to write the
//!   rest of the answer (whichever thread gets that event writes it). Nothing else of the
//!   connection is read or written while a request is in flight, so answers never interleave.
//! - When every worker is busy, a request on a kept-alive connection waits in the lane for the
//!   next free worker, or at most 2–20 ms for the reactor to take the lane over (2 ms while the
//!   reactor saw no worker waiting at its last look, else 20 ms), which queues it in the pool like
//!   any request.
//!
//! # Behind a proxy
//!
//! [`PeerAddr`] (and the access log's `%(h)s`) is the client a proxy in front names, when the
//! server believes it; [`SocketPeer`] is always the socket's peer.
//!
//! - PROXY protocol ([`proxy_protocol(true)`](ServerBuilder::proxy_protocol), all listeners):
//!   the header (HAProxy's v1 text, at most 107 bytes, `TCP4`/`TCP6`/`UNKNOWN`; or v2 binary,
//!   `PROXY` over TCP/IPv4 or IPv6, or `LOCAL`, TLVs skipped) is read before the first head, as
//!   it arrives; its source address is the client (`UNKNOWN`, `LOCAL` and address-less headers
//!   keep the socket's peer). Missing, malformed or late (the head timeout): closed, no answer.
//! - Forwarding headers ([`forwarded_allow_ips`](ServerBuilder::forwarded_allow_ips), default
//!   `127.0.0.1` and `::1`): from a trusted peer (the PROXY source if any, else the socket's
//!   peer; a Unix socket peer unless the list is empty) `X-Forwarded-For` is read, else the
//!   `for=` of `Forwarded`; the list is walked from the right past trusted proxies, and the first
//!   untrusted address is the client (all trusted: the left-most). An entry that is not an
//!   address ends the walk (the client is then the last trusted hop passed, or the peer).
//!   `X-Forwarded-Proto`'s last value (else that element's `proto=`), `http` or `https`, becomes a
//!   [`ForwardedProto`]. From any other peer the headers are ignored. They are left in the
//!   request either way (as gunicorn does): read the extensions, not the headers. Your proxy must
//!   write the header read here (nginx: `proxy_set_header X-Forwarded-For
//!   $proxy_add_x_forwarded_for;`); a proxy that writes only `Forwarded` must drop a client's
//!   `X-Forwarded-For`, which is read first.
//! - The server's own decisions go by the socket: the self-call detection looks up the socket's
//!   peer (a local proxy's socket is not ours, so a request it forwards is never a self-call),
//!   and `X-Prefork-Depth` is honoured only from this host's sockets, and, when a proxy names the
//!   client, only if that client is on this host too.

//! # Access log
//!
//! One line per answered request on the `log` target [`ACCESS_TARGET`] (`prefork_pool::access`),
//! level `info`, in gunicorn's atom format ([`AccessLogFormat`]; default
//! [`DEFAULT_ACCESS_LOG_FORMAT`]). Times are UTC; `%(u)s` is always `-`. What the client sent
//! (request line, path, query, method, request headers) and response headers are written as
//! nginx writes them: `"`, `\`, control bytes and non-ASCII bytes as `\xHH` (`"` is `\x22`), so a
//! client cannot end a quoted field early or start a new record. Requests sent through
//! [`Loopback`] are not logged. Turn it off with
//! [`access_log(false)`](ServerBuilder::access_log). [`AccessLogFormat::json`] (the format
//! `json`) writes one JSON object per line instead.
//!
//! With [`access_log_file`](ServerBuilder::access_log_file) the lines go to that file (or stdout)
//! instead of the `log` facade, written by a log thread off the request's path (see
//! [`crate::log_sink`]).
//!
//! The requests the server refuses itself (a malformed head: 400, 408, 413, 414, 431, 501, 505)
//! are answered before any handler and have no access line: each is logged at `warn` on target
//! `prefork_pool::http`, naming the peer, the status and the reason (escaped), at most once per
//! 10 s per status with the count of those held back.
//!
//! # Streaming
//!
//! A handler may return `http::Response<`[`Body`]`>` (or a bare [`Body`], or `(StatusCode, Body)`):
//! an iterator of chunks ([`Body::stream`]), a `Read` ([`Body::reader`]) or a file
//! ([`Body::file`], sent with its `Content-Length`). It is sent chunked on HTTP/1.1 and
//! close-delimited on HTTP/1.0, by the worker that ran the handler, chunk by chunk: the worker
//! waits while the client does not take more, at most
//! [`write_timeout`](ServerBuilder::write_timeout) each time, then the connection is closed and
//! the stream counted in [`ServerHandle::streams`]. `HEAD` gets the headers only. **Each open
//! stream holds a worker thread until it ends**, so Server-Sent Events to N clients need at least
//! N workers (`.pool(|p| p.workers(N + spare))`); the pool's deadline stops applying once the
//! handler has returned.
//!
//! A request body larger than [`spool_body_above`](ServerBuilder::spool_body_above) (1 MiB) is
//! written to an unlinked temporary file as it arrives; the handler reads it from the
//! [`RequestBody`] in the request's extensions (the `Vec<u8>` body is then empty).
//! [`limit_body_bytes`](ServerBuilder::limit_body_bytes) (10 MiB) still applies.
//!
//! # Graceful shutdown
//!
//! [`ServerHandle::shutdown`] accepts every connection already in the listen backlog, then closes
//! the listeners (a Unix socket file the server bound is removed). Right then, a connection with
//! no request under way is closed (a lingering close: its client reads an end of file, never a
//! reset), unless it was accepted or last answered less than 1 s before: its client may be
//! writing its next request at that moment, so it has the rest of that second, and a request that
//! comes in time is answered (a client that sat in the backlog has normally sent its request
//! already). Every request already read is finished and answered with
//! `Connection: close` (requests already pipelined behind it are answered too).
//! When no connection with a request under way is left, or at the graceful timeout, the workers
//! stop waiting on the lane and the reactor reads and drops what the remaining clients sent (so that closing is a FIN, not a reset that
//! could lose an answer) and closes them; then the Pool is shut down with what is left of the
//! timeout, and every thread ends (a spare thread serving a self-call ends as soon as its handler
//! returns). Nothing already received is closed without an answer: at the graceful timeout a
//! request still arriving (a stalled upload) is answered 503 with `Retry-After: 1` (logged at
//! `warn` with the count), and a request still running is answered 503 by the Pool. A stalled
//! upload whose [`body_timeout`](ServerBuilder::body_timeout) or
//! [`min_body_rate`](ServerBuilder::min_body_rate) deadline comes first gets its 408 then.
//!
//! # Running as a service
//!
//! [`ServerHandle::serve_until_signal`]`(graceful_timeout)` blocks until SIGTERM or SIGINT, then
//! shuts down gracefully as above; a second signal stops at once, without waiting for the graceful
//! timeout: every request still queued, running or arriving (a half-sent upload) is answered 503,
//! and the listen backlog is left to the kernel. It needs no terminal and no stdin, so the program runs the same under
//! systemd, Docker, `nohup` or `&`, and `kill -TERM` loses no request already received:
//!
//! ```no_run
//! # use prefork_pool::http::Server;
//! # use std::time::Duration;
//! let server = Server::builder().bind("0.0.0.0:8000").serve(|_req, _ctx| "hi\n").unwrap();
//! let report = server.serve_until_signal(Duration::from_secs(30)).expect("signal handlers");
//! log::info!("stopped: {report:?}"); // main returns: exit status 0
//! ```
//!
//! In process mode (`prefork::Supervisor`) the supervisor handles the signals instead.

mod body;
mod engine;
mod handle;
mod handler;
mod http_error;
mod log_settings;
pub(crate) mod ops;
mod routing;
pub(crate) mod self_call;
#[allow(dead_code)]
pub(crate) mod serve;
mod server;
mod server_health;
mod settings;
#[cfg(unix)]
mod signals;
#[cfg(feature = "tls")]
pub(crate) mod tls;
pub mod types;
pub(crate) mod wire;

/// The fuzz target's entry point (`fuzz/fuzz_targets/head_and_body.rs`); built only with
/// `cfg(fuzzing)`, not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod __fuzz {
    pub use super::wire::fuzz::head_and_body;
}

pub use body::Body;
#[cfg(feature = "prefork")]
pub(crate) use engine::acceptor::AcceptPolicy;
// The tower mode's accept loop (`prefork/workers/service/accept.rs`) shares the reactor's.
#[cfg(feature = "tower")]
pub(crate) use engine::acceptor::{tcp_queued, StallClock, GATE_RECHECK, QUEUE_STALL};
pub use engine::handoff::{request_depth, DEPTH_HEADER};
pub use engine::spool::RequestBody;
pub use engine::stream::StreamStats;
pub use handle::ServerHandle;
pub use handler::{handler, Handler, IntoResponse, IntoResponseParts, RawJson};
pub use http_error::HttpError;
pub use ops::access_log::{AccessLogFormat, ACCESS_TARGET, DEFAULT_ACCESS_LOG_FORMAT};
#[cfg(feature = "prefork")]
pub(crate) use ops::metrics::HttpCounters;
pub use ops::metrics::{ServerMetrics, DURATION_BUCKETS, METHODS, OWN_STATUSES};
pub use ops::stuck::{BusyWorker, StuckPolicy, StuckReport, EXIT_STUCK};
pub use routing::extract::{
    private as extract_markers, ClientAddr, Cx, Extension, FromRequest, FromRequestParts,
    Rejection, State,
};
#[cfg(feature = "serde")]
pub use routing::extract_serde::{Path, Query};
#[cfg(feature = "json")]
pub use routing::json::Json;
pub use routing::route_handler::{with_context, RouteHandler, ViaContext, WithContext, WithWorker};
pub use routing::router::{
    any, delete, get, head, options, patch, post, put, MethodRouter, Router,
};
pub use self_call::calls::SelfCalls;
pub use self_call::loopback::Loopback;
#[doc(hidden)]
pub use self_call::owner_lookup::{hold_lookups, LookupHold};
pub use server::{ServeError, Server, ServerBuilder};
pub use types::{ForwardedProto, HttpRequest, HttpResponse, PeerAddr, SocketPeer, TcpEnds};
pub use wire::parse::Limits;
pub use wire::response::error_response;
