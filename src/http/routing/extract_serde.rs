//! The typed extractors of feature `serde`: [`Path<T>`] and [`Query<T>`], and the deserializer
//! they share: every value is text, parsed as the field's type asks (`u32`, `bool`, an enum's unit
//! variant, `Option`, a string).

use std::borrow::Cow;

use http::request::Parts;
use http::StatusCode;
use serde::de::value::{Error as DeError, MapDeserializer, SeqDeserializer};
use serde::de::{DeserializeOwned, Error as _, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use crate::http::routing::extract::{query_pairs, Cx, FromRequestParts, Rejection};

/// The route's parameters (`/notes/{id}`), percent-decoded, as `T`: one value (`Path<u64>`) when
/// the route has one parameter, a tuple in the route's order (`Path<(String, u32)>`), or a struct
/// or map by name. Rejected with 400 when a value does not parse.
///
/// ```
/// use prefork_pool::http::{get, Path, Router};
/// use prefork_pool::http::types::http::{Request, StatusCode};
///
/// fn show(Path((user, n)): Path<(String, u32)>) -> String {
///     format!("{user} #{n}\n")
/// }
/// let app = Router::new().route("/users/{user}/notes/{n}", get(show));
/// let r = app.oneshot(Request::get("/users/ann%20b/notes/7").body(Vec::new()).unwrap());
/// assert_eq!(r.body(), b"ann b #7\n");
/// let r = app.oneshot(Request::get("/users/ann/notes/x").body(Vec::new()).unwrap());
/// assert_eq!(r.status(), StatusCode::BAD_REQUEST);
/// assert!(String::from_utf8_lossy(r.body()).starts_with("Path: "));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Path<T>(pub T);

impl<S, T: DeserializeOwned> FromRequestParts<S> for Path<T> {
    fn from_request_parts(_: &mut Parts, cx: &Cx<'_, S>) -> Result<Self, Rejection> {
        T::deserialize(PathDe(cx.params)).map(Path).map_err(|e| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                "Path",
                format!("invalid URL parameter: {e}"),
            )
        })
    }
}

/// The query string, percent-decoded (`%2D` is `-`, `+` a space), as `T` (a struct whose fields
/// are the names; an `Option` field may be missing). Rejected with 400 when a field is missing or
/// does not parse.
///
/// ```
/// use prefork_pool::http::{get, Query, Router};
/// use prefork_pool::http::types::http::Request;
///
/// #[derive(serde::Deserialize)]
/// struct Page { q: String, page: Option<u32> }
///
/// let app = Router::new().route("/search", get(|Query(p): Query<Page>| {
///     format!("{} p{}\n", p.q, p.page.unwrap_or(1))
/// }));
/// let r = app.oneshot(Request::get("/search?q=a%2Db+c&page=3").body(Vec::new()).unwrap());
/// assert_eq!(r.body(), b"a-b c p3\n");
/// let r = app.oneshot(Request::get("/search?page=3").body(Vec::new()).unwrap());
/// assert_eq!((r.status().as_u16(), &r.body()[..]), (400, &b"Query: missing field `q`\n"[..]));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Query<T>(pub T);

impl<S, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    fn from_request_parts(parts: &mut Parts, _: &Cx<'_, S>) -> Result<Self, Rejection> {
        let bad = |e: String| Rejection::new(StatusCode::BAD_REQUEST, "Query", e);
        let pairs = query_pairs(parts.uri.query().unwrap_or("")).map_err(bad)?;
        let map = MapDeserializer::new(pairs.iter().map(|(k, v)| (&**k, Text(v))));
        T::deserialize(map)
            .map(Query)
            .map_err(|e: DeError| bad(e.to_string()))
    }
}

/// The route's parameters as a whole.
struct PathDe<'a>(&'a [(&'a str, String)]);

impl PathDe<'_> {
    /// The one parameter, for a `Path` of one value.
    fn one(&self) -> Result<Text<'_>, DeError> {
        match self.0 {
            [(_, one)] => Ok(Text(one)),
            params => Err(DeError::custom(format_args!(
                "the route has {} parameters, one expected",
                params.len()
            ))),
        }
    }
}

/// One value: the one parameter's.
macro_rules! the_one {
    ($($de:ident),*) => {$(
        fn $de<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            self.one()?.$de(v)
        }
    )*};
}

impl<'de> serde::Deserializer<'de> for PathDe<'_> {
    type Error = DeError;

    the_one!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_option,
        deserialize_unit
    );
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.one()?.deserialize_newtype_struct(name, v)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.one()?.deserialize_enum(name, variants, v)
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_map(MapDeserializer::new(
            self.0.iter().map(|(k, val)| (*k, Text(val))),
        ))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_seq(SeqDeserializer::new(
            self.0.iter().map(|(_, val)| Text(val)),
        ))
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, DeError> {
        if len != self.0.len() {
            return Err(DeError::custom(format_args!(
                "the route has {} parameters, the tuple {len}",
                self.0.len()
            )));
        }
        self.deserialize_seq(v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_tuple(len, v)
    }
    forward_to_deserialize_any! {
        i128 u128 str string bytes byte_buf unit_struct identifier ignored_any
    }
}

/// One value, as text: parsed as the type asks.
struct Text<'a>(&'a str);

impl<'de> IntoDeserializer<'de, DeError> for Text<'_> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

macro_rules! parsed {
    ($($de:ident => $visit:ident: $t:ty),* $(,)?) => {$(
        fn $de<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            match self.0.parse::<$t>() {
                Ok(n) => v.$visit(n),
                Err(e) => Err(DeError::custom(format_args!(
                    "{:?} is not a {}: {e}", self.0, stringify!($t)
                ))),
            }
        }
    )*};
}

impl<'de> serde::Deserializer<'de> for Text<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_str(self.0)
    }
    parsed! {
        deserialize_bool => visit_bool: bool,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
        deserialize_char => visit_char: char,
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_some(self)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let s: Cow<'_, str> = Cow::Borrowed(self.0);
        serde::Deserializer::deserialize_enum(s.into_owned().into_deserializer(), name, variants, v)
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }
    forward_to_deserialize_any! {
        i128 u128 str string bytes byte_buf unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}
