//! Configuration: the YAML file model (serde) → validation → runtime types.
//! `torii serve` and `torii check` both load through [`load_file`].

pub mod duration;
pub mod locate;
pub mod model;
pub mod parse;
pub mod problem;
pub mod raw;

pub use model::*;
