//! The pre-fork process supervisor (feature `prefork`, unix).
