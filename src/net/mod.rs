//! Socket-level pieces under every stage: bytes read ahead and replayed
//! (`Prefixed`), and where a redirected connection was headed
//! (`SO_ORIGINAL_DST`).

pub mod original_dst;
pub mod prefixed;
