//! Routes and extractors: the `Router` (matchit), the handlers it calls with their extractors, and the serde forms (`Path`, `Query`, `Json`).

pub(super) mod extract;
#[cfg(feature = "serde")]
pub(super) mod extract_serde;
#[cfg(feature = "json")]
pub(super) mod json;
pub(super) mod route_handler;
pub(super) mod router;
#[cfg(all(test, feature = "json"))]
pub(super) mod router_tests;
