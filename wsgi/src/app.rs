//! One WSGI call (PEP 3333) on a pool thread: the environ from the request, `start_response` and
//! its `write`, the response iterable collected or streamed, `close()` always called.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use prefork_pool::http::types::http::{HeaderName, HeaderValue, Response, StatusCode};
use prefork_pool::http::{Body, HttpRequest, HttpResponse, IntoResponse};
use prefork_pool::Context;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyString, PyTuple};

use crate::environ;

/// The app and what every request's environ starts from.
pub struct WsgiApp {
    app: Py<PyAny>,
    /// What every environ shares.
    fixed: environ::Fixed,
    /// `wsgi.file_wrapper`'s class, to serve a file by its descriptor.
    file_wrapper: Option<Py<PyAny>>,
}

/// What `start_response` was given, shared with its `write` callable.
#[derive(Default)]
struct Started {
    /// The status code (the reason phrase sent is the code's standard one).
    status: Option<StatusCode>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The headers are on their way to the client: a later `start_response` with `exc_info`
    /// re-raises it (PEP 3333).
    sent: bool,
    /// What the app passed to `write()`, sent before the iterable's chunks.
    written: Vec<u8>,
}

type Shared = Arc<Mutex<Started>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Started> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `start_response` callable given to the app.
#[pyclass(module = "prefork_wsgi._native")]
pub struct StartResponse {
    started: Shared,
}

/// The `write` callable `start_response` returns (the imperative API PEP 3333 keeps for old
/// frameworks): its bytes go out before the iterable's, once the app returns.
#[pyclass(module = "prefork_wsgi._native")]
pub struct Write {
    started: Shared,
}

/// Headers a WSGI app may not set (PEP 3333: hop-by-hop, the server's business); dropped, as
/// gunicorn does.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let started = lock(&self.started);
            match exc_info {
                Some(info) if started.sent => {
                    // Too late to change the answer: re-raise the app's error (PEP 3333).
                    let exc = info.get_item(1)?;
                    let tb = info.get_item(2)?;
                    let exc = exc.call_method1("with_traceback", (tb,))?;
                    return Err(PyErr::from_value(exc));
                }
                None if started.status.is_some() => {
                    return Err(PyAssertionError::new_err(
                        "start_response was already called (a second call needs exc_info)",
                    ));
                }
                _ => {}
            }
        }
        let status = status
            .downcast::<PyString>()
            .map_err(|_| PyTypeError::new_err("status must be a str such as '200 OK'"))?
            .to_cow()?
            .to_string();
        let code = status.split_once(' ').map_or(status.as_str(), |(c, _)| c);
        let code = code
            .parse::<u16>()
            .ok()
            .filter(|_| code.len() == 3)
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "status {status:?}: not a three-digit code and a reason phrase"
                ))
            })?;
        let list = headers.downcast::<PyList>().map_err(|_| {
            PyTypeError::new_err("response headers must be a list of (name, value) tuples")
        })?;
        let mut parsed = Vec::with_capacity(list.len());
        for item in list.iter() {
            let pair = item.downcast::<PyTuple>().map_err(|_| {
                PyTypeError::new_err(format!("response header {item}: not a (name, value) tuple"))
            })?;
            if pair.len() != 2 {
                return Err(PyTypeError::new_err(format!(
                    "response header {item}: not a (name, value) tuple"
                )));
            }
            let name = pair.get_item(0)?;
            let value = pair.get_item(1)?;
            let (Ok(name), Ok(value)) = (name.downcast::<PyString>(), value.downcast::<PyString>())
            else {
                return Err(PyTypeError::new_err(format!(
                    "response header {item}: name and value must be str"
                )));
            };
            let name = name.to_cow()?;
            if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                continue;
            }
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| PyValueError::new_err(format!("response header name {name:?}")))?;
            let value = latin1_bytes(&value.to_cow()?)
                .and_then(|b| HeaderValue::from_bytes(&b).ok())
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "response header {name}: {value} (latin-1 text without control characters)"
                    ))
                })?;
            parsed.push((header, value));
        }
        let mut started = lock(&self.started);
        started.status = Some(code);
        started.headers = parsed;
        Ok(Write {
            started: self.started.clone(),
        })
    }
}

#[pymethods]
impl Write {
    fn __call__(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data
            .downcast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        let mut started = lock(&self.started);
        if started.status.is_none() {
            return Err(PyAssertionError::new_err("write() before start_response"));
        }
        if !data.as_bytes().is_empty() {
            // Headers count as sent from the first write (PEP 3333): a later start_response
            // with exc_info re-raises.
            started.sent = true;
        }
        started.written.extend_from_slice(data.as_bytes());
        Ok(())
    }
}

/// A str of code points below 256 as its latin-1 bytes (PEP 3333's "native strings").
fn latin1_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// The Python traceback of `err`, as `traceback.format_exception` writes it.
pub fn traceback(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )
    });
    match formatted.and_then(|lines| PyString::new(py, "").call_method1("join", (lines,))) {
        Ok(s) => s.to_string(),
        Err(_) => err.to_string(),
    }
}

fn internal_error() -> HttpResponse {
    let mut r = Response::new(b"Internal Server Error\n".to_vec());
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r.headers_mut().insert(
        prefork_pool::http::types::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Calls `close()` on the response iterable, if it has one; an error there is logged.
fn close(py: Python<'_>, iterable: &Bound<'_, PyAny>, route: &str) {
    // One lookup (not hasattr, then another in call_method0), of an interned name.
    if let Ok(close) = iterable.getattr(intern!(py, "close")) {
        if let Err(e) = close.call0() {
            log::error!(
                "Error closing the response of {route}\n{}",
                traceback(py, &e).trim_end()
            );
        }
    }
}

impl WsgiApp {
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        base: Py<PyDict>,
        server: (String, String),
        script_name: String,
    ) -> PyResult<WsgiApp> {
        if !app.bind(py).is_callable() {
            return Err(PyTypeError::new_err(format!(
                "the application object {} is not callable",
                app.bind(py).repr()?
            )));
        }
        let file_wrapper = base
            .bind(py)
            .get_item("wsgi.file_wrapper")?
            .map(|c| c.unbind());
        Ok(WsgiApp {
            app,
            fixed: environ::Fixed::new(py, base.bind(py), script_name, server)?,
            file_wrapper,
        })
    }

    /// The pool's handler: the GIL is taken for the call, released while the server waits.
    pub fn handle(&self, req: HttpRequest, ctx: &Context) -> HttpResponse {
        // `METHOD /path`, for the log lines (made without the formatting machinery: it is on
        // every request).
        let (method, path) = (req.method().as_str(), req.uri().path());
        let mut route = String::with_capacity(method.len() + 1 + path.len());
        route.push_str(method);
        route.push(' ');
        route.push_str(path);
        let resp = Python::with_gil(|py| self.call(py, req, &route));
        if ctx.is_cancelled() && std::time::Instant::now() >= ctx.deadline() {
            log::warn!(
                "`{route}` returned {:?} after its --timeout had passed: the client was answered \
                 504 then; a Python thread cannot be killed, so this one was left to finish, and \
                 its answer is dropped",
                std::time::Instant::now().saturating_duration_since(ctx.deadline())
            );
        }
        resp
    }

    fn call(&self, py: Python<'_>, req: HttpRequest, route: &str) -> HttpResponse {
        let environ = match environ::build(py, &self.fixed, req) {
            Ok(e) => e,
            Err(e) => {
                log::error!(
                    "Error handling request {route}\n{}",
                    traceback(py, &e).trim_end()
                );
                return internal_error();
            }
        };
        let started: Shared = Arc::default();
        let start_response = match Py::new(
            py,
            StartResponse {
                started: started.clone(),
            },
        ) {
            Ok(s) => s,
            Err(_) => return internal_error(),
        };
        let iterable = match self.app.bind(py).call1((environ, start_response)) {
            Ok(i) => i,
            Err(e) => {
                log::error!(
                    "Error handling request {route}\n{}",
                    traceback(py, &e).trim_end()
                );
                return internal_error();
            }
        };
        match self.respond(py, &iterable, &started, route) {
            Ok(r) => r,
            Err(e) => {
                log::error!(
                    "Error handling request {route}\n{}",
                    traceback(py, &e).trim_end()
                );
                close(py, &iterable, route);
                internal_error()
            }
        }
    }

    /// The answer from the iterable: the whole body when it ends at once (a Flask response), else
    /// a stream pulled chunk by chunk, each `next()` under the GIL, released between them.
    fn respond(
        &self,
        py: Python<'_>,
        iterable: &Bound<'_, PyAny>,
        started: &Shared,
        route: &str,
    ) -> PyResult<HttpResponse> {
        if let Some(resp) = self.file_response(py, iterable, started, route)? {
            return Ok(resp);
        }
        let mut chunks: VecDeque<Vec<u8>> = VecDeque::new();
        let mut iter = iterable.try_iter()?;
        let mut ended = false;
        // A list or tuple (`return [body]`) is whole already: taken at once, sent with its
        // length.
        let whole = iterable.is_instance_of::<PyList>() || iterable.is_instance_of::<PyTuple>();
        // Else up to the first non-empty chunk: start_response may be called as late as that.
        loop {
            match iter.next() {
                None => {
                    ended = true;
                    break;
                }
                Some(item) => {
                    let chunk = bytes_of(&item?)?;
                    if !chunk.is_empty() {
                        chunks.push_back(chunk);
                        if !whole {
                            break;
                        }
                    }
                }
            }
        }
        let (status, headers, written) = {
            let mut s = lock(started);
            let Some(status) = s.status else {
                return Err(PyAssertionError::new_err(
                    "the application returned without calling start_response",
                ));
            };
            s.sent = true;
            (
                status,
                std::mem::take(&mut s.headers),
                std::mem::take(&mut s.written),
            )
        };
        if !written.is_empty() {
            chunks.push_front(written);
        }
        let declared = headers
            .iter()
            .find(|(n, _)| n == prefork_pool::http::types::http::header::CONTENT_LENGTH)
            .and_then(|(_, v)| v.to_str().ok()?.trim().parse::<usize>().ok());
        let have: usize = chunks.iter().map(Vec::len).sum();
        if !ended && declared.is_some_and(|n| have >= n) {
            // The declared body is complete: the iterable should end now (not wait).
            match iter.next() {
                None => ended = true,
                Some(item) => {
                    let chunk = bytes_of(&item?)?;
                    chunks.push_back(chunk);
                }
            }
        }
        if ended {
            close(py, iterable, route);
            let body: Vec<u8> = if chunks.len() == 1 {
                chunks.pop_front().unwrap_or_default()
            } else {
                chunks.into_iter().flatten().collect()
            };
            let mut resp = Response::new(body);
            *resp.status_mut() = status;
            resp.headers_mut().extend(headers);
            return Ok(resp);
        }
        let stream = PyStream {
            pending: chunks,
            iter: Some(iter.unbind()),
            iterable: Some(iterable.clone().unbind()),
            route: route.to_string(),
        };
        let mut builder = Response::builder().status(status);
        for (n, v) in headers {
            builder = builder.header(n, v);
        }
        let resp = builder
            .body(Body::stream(stream))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(resp.into_response())
    }

    /// `wsgi.file_wrapper(file)` of a real file: sent from its descriptor (a copy of it) from its
    /// current position, with its length; the wrapper is closed at once.
    fn file_response(
        &self,
        py: Python<'_>,
        iterable: &Bound<'_, PyAny>,
        started: &Shared,
        route: &str,
    ) -> PyResult<Option<HttpResponse>> {
        let Some(wrapper) = &self.file_wrapper else {
            return Ok(None);
        };
        if !iterable.is_instance(wrapper.bind(py))? {
            return Ok(None);
        }
        let filelike = iterable.getattr("filelike")?;
        let Ok(fd) = filelike
            .call_method0("fileno")
            .and_then(|f| f.extract::<i32>())
        else {
            return Ok(None);
        };
        let pos: u64 = filelike
            .call_method0("tell")
            .and_then(|p| p.extract())
            .unwrap_or(0);
        // SAFETY: dup(2) of a descriptor the app's open file holds (valid while it is open, and
        // we hold the file object); the copy is ours alone, owned by the OwnedFd below.
        let copy = unsafe { libc::dup(fd) };
        if copy < 0 {
            return Ok(None);
        }
        // SAFETY: `copy` is a fresh descriptor from dup(2) above that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(copy) };
        let (status, headers) = {
            let mut s = lock(started);
            let Some(status) = s.status else {
                return Err(PyAssertionError::new_err(
                    "the application returned without calling start_response",
                ));
            };
            if !s.written.is_empty() {
                return Ok(None);
            }
            s.sent = true;
            (status, std::mem::take(&mut s.headers))
        };
        close(py, iterable, route);
        let mut file = std::fs::File::from(owned);
        use std::io::Seek;
        // The copy shares the position with the original, which close() may have closed: set it.
        file.seek(io::SeekFrom::Start(pos))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let body = Body::file(file).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut builder = Response::builder().status(status);
        for (n, v) in headers {
            builder = builder.header(n, v);
        }
        let resp = builder
            .body(body)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Some(resp.into_response()))
    }
}

fn bytes_of(item: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    item.downcast::<PyBytes>()
        .map(|b| b.as_bytes().to_vec())
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "the response iterable yielded {}, not bytes",
                item.get_type()
                    .name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string())
            ))
        })
}

/// A response iterable that did not end at once, sent as it yields: each `next()` takes the GIL.
struct PyStream {
    pending: VecDeque<Vec<u8>>,
    iter: Option<Py<PyIterator>>,
    iterable: Option<Py<PyAny>>,
    route: String,
}

impl PyStream {
    fn finish(&mut self, py: Python<'_>) {
        self.iter = None;
        if let Some(it) = self.iterable.take() {
            close(py, it.bind(py), &self.route);
        }
    }
}

impl Iterator for PyStream {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(c) = self.pending.pop_front() {
            return Some(Ok(c));
        }
        self.iter.as_ref()?;
        Python::with_gil(|py| {
            let next = {
                let iter = self.iter.as_ref()?.bind(py);
                let mut it = iter.clone();
                it.next()
            };
            match next {
                None => {
                    self.finish(py);
                    None
                }
                Some(item) => match item.and_then(|i| bytes_of(&i)) {
                    Ok(chunk) => Some(Ok(chunk)),
                    Err(e) => {
                        log::error!(
                            "Error handling request {} (while streaming its body; the connection \
                             is closed)\n{}",
                            self.route,
                            traceback(py, &e).trim_end()
                        );
                        self.finish(py);
                        Some(Err(io::Error::other("the response iterable failed")))
                    }
                },
            }
        })
    }
}

impl Drop for PyStream {
    fn drop(&mut self) {
        if self.iterable.is_some() && !crate::gil::detaching_stopped() {
            // The client went away, or the body was cut: close() is still called (PEP 3333).
            Python::with_gil(|py| self.finish(py));
        }
    }
}
