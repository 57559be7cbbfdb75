//! `VERITY_IO=std` makes `best_backend` return the standard library's
//! backend even where io_uring works; without it, io_uring is chosen
//! wherever a ring can be set up.
//!
//! One test in its own binary: it changes the process environment.

use verity_engine::io::{best_backend, BACKEND_ENV};

#[test]
fn verity_io_std_forces_the_std_backend() {
    std::env::set_var(BACKEND_ENV, "std");
    for direct in [false, true] {
        assert_eq!(best_backend(direct).name(), "std");
    }

    std::env::remove_var(BACKEND_ENV);
    #[cfg(target_os = "linux")]
    {
        use verity_engine::uring::{UringIo, UringOptions};
        let expected = match UringIo::new(UringOptions::default()) {
            Ok(_) => "io_uring",
            Err(e) => {
                println!("io_uring unavailable ({e}): the fallback is expected");
                "std"
            }
        };
        assert_eq!(best_backend(false).name(), expected);
        assert_eq!(best_backend(true).name(), expected);
    }
    #[cfg(not(target_os = "linux"))]
    assert_eq!(best_backend(false).name(), "std");
}
