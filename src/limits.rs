//! Fixed numbers torii applies on both sides of a request, kept in one
//! place because more than one stage uses them.

/// HTTP/2 flow-control windows torii advertises, to clients and to
/// upstreams alike. They cap how many bytes one stream (and one
/// connection) may have in flight unread: 1 MiB per stream lets a 4 MiB
/// gRPC message move in a few round trips without letting one slow reader
/// pin much memory; the connection window allows a handful of busy streams
/// at full speed.
pub const H2_STREAM_WINDOW: u32 = 1024 * 1024;
pub const H2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
