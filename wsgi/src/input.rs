//! `wsgi.input`: the request body, whole in memory or spooled to a temporary file by the server
//! (bodies over 1 MiB), read with `read`, `readline`, `readlines` and iteration. Reads from the
//! file release the GIL.

use std::io::{BufRead, BufReader, Read};
use std::sync::Mutex;

use prefork_pool::http::RequestBody;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

enum Source {
    Memory { data: Vec<u8>, pos: usize },
    File(BufReader<RequestBody>),
}

/// The request body (`wsgi.input`). `wsgi.input_terminated` is true: reading to the end is safe
/// (the server read the whole body before the app was called), with or without `CONTENT_LENGTH`.
#[pyclass(module = "prefork_wsgi._native")]
pub struct Input {
    source: Mutex<Source>,
    /// A spooled body: read from its file, without the GIL.
    spooled: bool,
}

impl Input {
    pub fn memory(data: Vec<u8>) -> Input {
        Input {
            source: Mutex::new(Source::Memory { data, pos: 0 }),
            spooled: false,
        }
    }

    pub fn file(body: RequestBody) -> Input {
        Input {
            source: Mutex::new(Source::File(BufReader::with_capacity(64 * 1024, body))),
            spooled: true,
        }
    }

    fn with_source<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Source) -> std::io::Result<T> + Send,
    ) -> PyResult<T> {
        let run = || f(&mut self.source.lock().unwrap_or_else(|e| e.into_inner()));
        // A file read may wait on the disk: without the GIL, and the lock is taken after the GIL
        // is released (a thread holding the lock never waits for the GIL). A read from memory
        // holds the GIL throughout, so no other thread holds the lock meanwhile.
        let r = if self.spooled {
            py.allow_threads(run)
        } else {
            run()
        };
        r.map_err(|e| PyValueError::new_err(format!("reading the request body: {e}")))
    }
}

/// `None` or a negative size: no limit.
fn limit(size: Option<isize>) -> usize {
    match size {
        Some(n) if n >= 0 => n as usize,
        _ => usize::MAX,
    }
}

fn read(source: &mut Source, max: usize) -> std::io::Result<Vec<u8>> {
    match source {
        Source::Memory { data, pos } => {
            let end = pos.saturating_add(max).min(data.len());
            let out = data[*pos..end].to_vec();
            *pos = end;
            Ok(out)
        }
        Source::File(r) => {
            let mut out = Vec::new();
            if max == usize::MAX {
                r.read_to_end(&mut out)?;
            } else {
                r.take(max as u64).read_to_end(&mut out)?;
            }
            Ok(out)
        }
    }
}

fn readline(source: &mut Source, max: usize) -> std::io::Result<Vec<u8>> {
    match source {
        Source::Memory { data, pos } => {
            let rest = &data[*pos..];
            let cap = rest.len().min(max);
            let end = rest[..cap]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(cap, |i| i + 1);
            let out = rest[..end].to_vec();
            *pos += end;
            Ok(out)
        }
        Source::File(r) => {
            let mut out = Vec::new();
            if max == usize::MAX {
                r.read_until(b'\n', &mut out)?;
            } else {
                r.take(max as u64).read_until(b'\n', &mut out)?;
            }
            Ok(out)
        }
    }
}

#[pymethods]
impl Input {
    /// Up to `size` bytes (all that is left when `size` is omitted, `None` or negative); `b""` at
    /// the end.
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let max = limit(size);
        let data = self.with_source(py, move |s| read(s, max))?;
        Ok(PyBytes::new(py, &data))
    }

    /// One line, with its `\n` (at most `size` bytes); `b""` at the end.
    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let max = limit(size);
        let data = self.with_source(py, move |s| readline(s, max))?;
        Ok(PyBytes::new(py, &data))
    }

    /// The remaining lines (stopping once `hint` bytes were read, when it is given and positive).
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let max = match hint {
            Some(n) if n > 0 => n as usize,
            _ => usize::MAX,
        };
        let lines = self.with_source(py, move |s| {
            let mut lines = Vec::new();
            let mut total = 0usize;
            loop {
                let line = readline(s, usize::MAX)?;
                if line.is_empty() {
                    break;
                }
                total += line.len();
                lines.push(line);
                if total >= max {
                    break;
                }
            }
            Ok(lines)
        })?;
        Ok(lines.iter().map(|l| PyBytes::new(py, l)).collect())
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
