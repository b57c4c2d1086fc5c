//! Configuration: the YAML file model (serde) → validation → runtime types.
//! `torii serve` and `torii check` both load through [`load_file`].

pub mod model;

pub use model::*;
