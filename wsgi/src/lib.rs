//! `prefork_wsgi._native`: the WSGI front of prefork-pool, a Python extension (abi3, CPython 3.9
//! or later). The command line (`prefork-wsgi`, gunicorn's flags) is Python
//! (`python/prefork_wsgi/cli.py`); it calls [`run::serve`] with the checked settings.
//!
//! The app runs on the crate's pool threads, each attached to the interpreter once and taking the
//! GIL per request; nothing holds the GIL while it waits (the reactor, a pool thread between
//! requests, the master, a read of a spooled body). So a view blocked in `requests.post` to its
//! own server has released the GIL, and the crate's self-call detection serves the inner request
//! on a spare thread that takes it.
#![deny(clippy::undocumented_unsafe_blocks)]

mod app;
mod environ;
mod gil;
mod input;
mod logger;
mod options;
mod run;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run::serve, m)?)?;
    m.add_class::<input::Input>()?;
    m.add_class::<app::StartResponse>()?;
    m.add_class::<app::Write>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
