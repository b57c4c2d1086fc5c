//! The HTTP side of torii: serving client connections and the request
//! pipeline that takes each request to an upstream.

pub mod body;
pub mod counting;
pub mod h2;
pub mod h2server;
pub mod headers;
pub mod outcome;
pub mod path;
pub mod proxy;
pub mod response_body;
pub mod server;
