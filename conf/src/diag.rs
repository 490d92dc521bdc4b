//! Diagnostics: every problem found in a configuration file, with its place.
//!
//! Parsers never stop at the first problem: they collect a [`Diagnostic`] for
//! each one, so that an administrator sees every mistake in a file at once.
//! A diagnostic names the file and, where there is one, the line, in the form
//! `FILE:LINE: message` (errors), `FILE:LINE: warning: message` (warnings)
//! or `FILE:LINE: note: message` (what a valid configuration will do).

use std::fmt;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Information only (what the configuration will do).
    Note,
    /// Worth saying, but the configuration is usable.
    Warning,
    /// The configuration cannot be used as it is.
    Error,
}

/// One problem, with the file and line where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the administrator knows it (a path, or `(embedded)/main.cf`).
    pub file: String,
    /// The 1-based line number, when the problem belongs to a line.
    pub line: Option<usize>,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in words an administrator understands.
    pub message: String,
}

impl Diagnostic {
    /// An error at `file:line`.
    pub fn error(file: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            line,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// A warning at `file:line`.
    pub fn warning(file: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            line,
            severity: Severity::Warning,
            message: message.into(),
        }
    }

    /// A note at `file:line`: not a problem, what the configuration does.
    pub fn note(file: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            line,
            severity: Severity::Note,
            message: message.into(),
        }
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        match self.severity {
            Severity::Note => write!(f, ": note: {}", self.message),
            Severity::Warning => write!(f, ": warning: {}", self.message),
            Severity::Error => write!(f, ": {}", self.message),
        }
    }
}

/// A configuration that could not be used, with every reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.0))]
pub struct ConfigErrors(pub Vec<Diagnostic>);

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
