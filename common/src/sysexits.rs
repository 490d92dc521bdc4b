//! Exit codes, as sysexits(3) defines them. Every postern program documents
//! which of these it uses; 75 means "try again later", 78 "fix the
//! configuration".

/// Success.
pub const EX_OK: i32 = 0;
/// Wrong command-line usage.
pub const EX_USAGE: i32 = 64;
/// Bad input data.
pub const EX_DATAERR: i32 = 65;
/// Unknown user.
pub const EX_NOUSER: i32 = 67;
/// A service is unavailable.
pub const EX_UNAVAILABLE: i32 = 69;
/// Internal software error.
pub const EX_SOFTWARE: i32 = 70;
/// System error (cannot fork, and the like).
pub const EX_OSERR: i32 = 71;
/// Cannot create a file.
pub const EX_CANTCREAT: i32 = 73;
/// Input/output error.
pub const EX_IOERR: i32 = 74;
/// Temporary failure: try again later.
pub const EX_TEMPFAIL: i32 = 75;
/// Permission denied.
pub const EX_NOPERM: i32 = 77;
/// Configuration error.
pub const EX_CONFIG: i32 = 78;
