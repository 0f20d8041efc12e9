//! A request's line (`GET /path HTTP/1.1`) as the tower mode keeps it for the heartbeat and the
//! logs: its parts, written out only where it is shown.

use std::fmt;

use hyper::{Method, Request, Uri, Version};

/// A request's line: cloned from the request's head (no formatting, no allocation for the
/// standard methods), displayed as `METHOD target VERSION`.
#[derive(Clone)]
pub(super) struct RequestLine {
    method: Method,
    uri: Uri,
    version: Version,
}

impl RequestLine {
    pub(super) fn of<B>(req: &Request<B>) -> RequestLine {
        RequestLine {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
        }
    }
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Piece by piece: cheaper than `write!`'s walk over its arguments.
        f.write_str(self.method.as_str())?;
        f.write_str(" ")?;
        fmt::Display::fmt(&self.uri, f)?;
        f.write_str(" ")?;
        fmt::Debug::fmt(&self.version, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_request_line() {
        let req = Request::post("/a/b?c=1").body(()).unwrap();
        assert_eq!(RequestLine::of(&req).to_string(), "POST /a/b?c=1 HTTP/1.1");
        let req = Request::get("/").version(Version::HTTP_2).body(()).unwrap();
        assert_eq!(RequestLine::of(&req).to_string(), "GET / HTTP/2.0");
    }
}
