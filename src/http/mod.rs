//! The HTTP/1.1 front end (feature `http`).
