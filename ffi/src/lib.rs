//! The C ABI of Verity: opaque handles, status codes, owned byte buffers and
//! a cbindgen header, for C and Go programs. The functions arrive with the
//! `Db`; until then this crate only fixes the ABI version the header will
//! carry.

/// Major version of the C ABI: incompatible changes bump it.
pub const ABI_MAJOR: u32 = 0;

/// Minor version of the C ABI: compatible additions bump it.
pub const ABI_MINOR: u32 = 1;

/// `(major << 16) | minor`, the value `verity_abi_version()` will return.
pub const ABI_VERSION: u32 = (ABI_MAJOR << 16) | ABI_MINOR;

#[cfg(test)]
mod tests {
    #[test]
    fn abi_version_packs_major_and_minor() {
        assert_eq!(super::ABI_VERSION >> 16, super::ABI_MAJOR);
        assert_eq!(super::ABI_VERSION & 0xffff, super::ABI_MINOR);
    }
}
