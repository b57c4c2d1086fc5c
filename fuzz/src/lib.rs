//! The fuzz targets' checks (see `checks/mod.rs`); each target in
//! `fuzz_targets/` is one line calling `checks::target(NAME)`.

pub mod checks;
