//! The built-in echo service and `torii demo`.
