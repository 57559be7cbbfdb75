//! The C ABI of Verity: `libverity.so` and `libverity.a`, described by the
//! generated header `include/verity.h`, for C programs and for the Go
//! package in `go/`.
//!
//! It is a thin layer over the [`verity_core::Db`]: opaque handles
//! (`verity_db`, `verity_snapshot`, `struct verity_commit`, `verity_batch`,
//! `verity_iter`, `verity_options`, `verity_error`), `verity_status` codes,
//! and byte buffers the library owns until the caller hands them back to
//! `verity_bytes_free`. It adds no behaviour of its own beyond checking what
//! C passes in: every exported function runs inside `catch_unwind`
//! ([`guard`]), refuses NULL handles, NULL pointers with a length, and
//! oversized keys and values with `VERITY_INVALID_ARGUMENT` ([`args`]), and
//! answers `VERITY_CLOSED` for a snapshot, commit or iterator whose database
//! was closed (each handle keeps the database's shared state alive and
//! shares a closed flag with it).
//!
//! It is not a second API: what a call does is what the `Db` method of the
//! same name does. Allocations never cross the boundary except through the
//! library's own free functions.
//!
//! The crate builds only C libraries (no `rlib`), so its example is C: the
//! quick-start of the README, which `tests/c_programs.rs` compiles and runs
//! with the whole lifecycle test in `tests/c/`.

// Exporting C symbols (`#[no_mangle]`) and reading what C passes in is
// what this crate is; each module that does it opts in with its reason.
#![deny(unsafe_op_in_unsafe_fn)]
// The C names of the handles are their Rust names, so the header and this
// crate read the same.
#![allow(non_camel_case_types)]

// The header presents the functions in the order of these modules, a
// program's lifecycle (rustfmt sorts declarations only within a group,
// hence the blank lines).
mod error;
mod status;

mod bytes;

mod options;

mod db;

mod batch;

mod commit;

mod snapshot;

mod iter;

mod verify;

// Internal: argument checks and the panic boundary.
mod args;
mod guard;

pub use batch::*;
pub use bytes::*;
pub use commit::*;
pub use db::*;
pub use error::*;
pub use iter::*;
pub use options::*;
pub use snapshot::*;
pub use status::*;
pub use verify::*;

/// Major version of the C ABI: incompatible changes bump it.
pub const VERITY_ABI_MAJOR: u32 = 0;

/// Minor version of the C ABI: compatible additions bump it.
pub const VERITY_ABI_MINOR: u32 = 1;

/// The longest key the library takes, in bytes (keys are 1 to this many
/// bytes long).
pub const VERITY_MAX_KEY_LEN: usize = 65536;

/// The longest value the library takes, in bytes.
pub const VERITY_MAX_VALUE_LEN: usize = 16777216;

/// Bytes of a state root, a key hash and a value hash.
pub const VERITY_HASH_LEN: usize = 32;

/// The ABI version of the loaded library: `(VERITY_ABI_MAJOR << 16) |
/// VERITY_ABI_MINOR`. A program built against the header checks that the
/// major version matches (and that the minor version is at least its own)
/// before it calls anything else.
///
/// Thread safety: any thread, at any time.
#[no_mangle]
#[expect(unsafe_code, reason = "an exported C symbol")]
pub extern "C" fn verity_abi_version() -> u32 {
    (VERITY_ABI_MAJOR << 16) | VERITY_ABI_MINOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_version_packs_major_and_minor() {
        assert_eq!(verity_abi_version() >> 16, VERITY_ABI_MAJOR);
        assert_eq!(verity_abi_version() & 0xffff, VERITY_ABI_MINOR);
    }

    #[test]
    fn the_header_limits_are_the_db_limits() {
        assert_eq!(VERITY_MAX_KEY_LEN, verity_core::MAX_KEY_LEN);
        assert_eq!(VERITY_MAX_VALUE_LEN, verity_core::MAX_VALUE_LEN);
        assert_eq!(VERITY_HASH_LEN, verity_core::EMPTY.len());
    }
}
