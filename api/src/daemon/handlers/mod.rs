//! One module per group of endpoints; each handler parses its request and calls the engine.

pub mod build;
pub mod containers;
pub mod exec;
pub mod images;
pub mod networks;
pub mod system;
pub mod volumes;
