//! The Docker API's JSON answers as serde types.

pub mod containers;
pub mod images;
pub mod networks;
pub mod volumes;

pub use containers::*;
pub use images::*;
pub use networks::*;
pub use volumes::*;
