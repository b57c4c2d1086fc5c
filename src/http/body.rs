//! The body type torii hands to hyper, both directions.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

use crate::error::BoxError;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn incoming(b: hyper::body::Incoming) -> Body {
    b.map_err(BoxError::from).boxed_unsync()
}
