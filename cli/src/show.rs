//! `postern config`: parameters and services printed the way postconf(1)
//! prints them, so that the output can be pasted back into main.cf.

use std::collections::BTreeMap;

use postern_conf::{params, Config, ServiceEntry};

/// Which parameters to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Every known parameter with its effective value, plus main.cf's others.
    Effective,
    /// Only what main.cf sets (`-n`).
    NonDefault,
    /// The defaults (`-d`).
    Defaults,
}

/// How to print.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// Expand `$name` references (`-x`).
    pub expand: bool,
    /// Values only, no `name = ` (`-h`).
    pub values_only: bool,
}

/// Collects the `name → raw value` table for `which`.
pub fn parameters(config: &Config, which: Which) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match which {
        Which::Defaults => {
            for p in params::PARAMS {
                let default = config
                    .default_text(p.name)
                    .unwrap_or_else(|| p.default.to_string());
                out.insert(p.name.to_string(), default);
            }
        }
        Which::NonDefault => {
            for e in &config.main.entries {
                out.insert(e.name.clone(), e.value.clone());
            }
        }
        Which::Effective => {
            for p in params::PARAMS {
                out.insert(p.name.to_string(), config.raw(p.name).unwrap_or_default());
            }
            for e in &config.main.entries {
                out.insert(e.name.clone(), e.value.clone());
            }
        }
    }
    out
}

/// Formats one `name = value` line (or just the value).
pub fn line(config: &Config, name: &str, raw: &str, which: Which, style: Style) -> String {
    let value = if style.expand {
        let expanded = match which {
            Which::Defaults => config.expand_text(raw),
            _ => config.expanded(name).unwrap_or_else(|| Ok(raw.to_string())),
        };
        expanded.unwrap_or_else(|e| format!("{raw} (cannot expand: {e})"))
    } else {
        raw.to_string()
    };
    if style.values_only {
        value
    } else if value.is_empty() {
        format!("{name} =")
    } else {
        format!("{name} = {value}")
    }
}

/// Formats a master.cf entry the way `postconf -M` does.
pub fn service_line(s: &ServiceEntry) -> String {
    let mut line = format!("{:<10} {:<5}", s.name, s.kind.as_str());
    for f in &s.raw_fields {
        line.push_str(&format!(" {f:<7}"));
    }
    line.push(' ');
    line.push_str(&s.command);
    for o in &s.overrides {
        if o.value.chars().any(char::is_whitespace) {
            line.push_str(&format!(" -o {{ {} = {} }}", o.name, o.value));
        } else {
            line.push_str(&format!(" -o {}={}", o.name, o.value));
        }
    }
    for a in &s.args {
        if a.is_empty() || a.chars().any(char::is_whitespace) {
            line.push_str(&format!(" {{ {a} }}"));
        } else {
            line.push(' ');
            line.push_str(a);
        }
    }
    line
}
