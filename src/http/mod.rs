//! The HTTP/1.1 front end (feature `http`).

mod access_log;
mod parse;
mod response;

pub use access_log::{AccessLogFormat, ACCESS_TARGET, DEFAULT_ACCESS_LOG_FORMAT};
pub use parse::Limits;
pub use response::error_response;
