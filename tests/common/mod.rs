//! Helpers shared by the Db's integration tests (each test binary uses
//! some of them).

#![allow(unused_imports)]

pub use verity_testkit::{runner, scale, seed};
