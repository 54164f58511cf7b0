//! Platform FFI: every `unsafe` block of the crate lives in this folder, one module per platform,
//! each with a `// SAFETY:` note. The rest of the crate is safe code (`unsafe_code` is denied
//! workspace-wide and allowed only on these modules).

#[cfg(windows)]
#[allow(unsafe_code)]
pub(crate) mod windows;
