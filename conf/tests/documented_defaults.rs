//! Every default the documentation states is the code's: the README's
//! parameter table, and each "`name` (value)", "`name` (default value)" or
//! "`name` [value]" in the README, docs/ and the crates' man-page headers
//! (`//!`).

use std::path::{Path, PathBuf};

use postern_conf::params;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds conf/")
        .to_path_buf()
}

/// The `code` spans of a table cell, in order.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The rows of the README's parameter table: (names, defaults cell, line).
fn parameter_rows(readme: &str) -> Vec<(Vec<&str>, &str, usize)> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for (i, line) in readme.lines().enumerate() {
        if line.starts_with("| parameter | default |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let Some(row) = line.strip_prefix('|') else {
            break;
        };
        let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
        assert!(cells.len() >= 3, "README.md:{}: not a row: {line}", i + 1);
        rows.push((code_spans(cells[0]), cells[1], i + 1));
    }
    rows
}

#[test]
fn the_readme_table_states_the_code_s_defaults() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let rows = parameter_rows(&readme);
    assert!(rows.len() > 30, "the parameter table was not found");
    let mut wrong = Vec::new();
    for (names, cell, line) in rows {
        // "(empty: ...)", "(the host name; ...)": worked out at run time
        // from an empty default.
        let documented: Vec<&str> = if cell.starts_with('(') {
            vec![""; names.len()]
        } else {
            code_spans(cell)
        };
        assert_eq!(
            documented.len(),
            names.len(),
            "README.md:{line}: {} names, {} defaults",
            names.len(),
            documented.len()
        );
        for (name, doc) in names.iter().zip(documented) {
            match params::default_of(name) {
                None => wrong.push(format!("README.md:{line}: {name} is not a parameter")),
                Some(code) if code != doc => wrong.push(format!(
                    "README.md:{line}: {name}: documented {doc:?}, the code's default is {code:?}"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Each "`name` (value)", "`name` (default value)" or "`name` [value]" in
/// `text`, where name is a parameter: (name, value, line).
fn inline_defaults(text: &str) -> Vec<(String, String, usize)> {
    // Line breaks fold into spaces; remember where each line starts.
    let mut flat = String::new();
    let mut starts = Vec::new();
    for line in text.lines() {
        starts.push(flat.len());
        flat.push_str(line.trim());
        flat.push(' ');
    }
    let mut found = Vec::new();
    let mut rest = flat.as_str();
    while let Some(open) = rest.find('`') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('`') else { break };
        let name = &after[..close];
        let tail = &after[close + 1..];
        rest = tail;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let Some(code) = params::default_of(name) else {
            continue;
        };
        let value = if let Some(paren) = tail.strip_prefix(" (") {
            // "(5)", "(default 2)": one word.
            let paren = paren.strip_prefix("default ").unwrap_or(paren);
            let Some(end) = paren.find(')') else { continue };
            let value = &paren[..end];
            if value.is_empty() || value.contains([' ', '`', ',', ';', '(']) {
                continue;
            }
            value
        } else if let Some(bracket) = tail.strip_prefix(" [") {
            // A man page's "defaults in brackets": "[]", "[5d]", "[$a, b]";
            // a description ("[the host name, ...]", "[error:...]") is not
            // a value.
            let Some(end) = bracket.find(']') else {
                continue;
            };
            let value = &bracket[..end];
            if value.contains("...") || (value.contains(' ') && !code.contains(' ')) {
                continue;
            }
            value
        } else {
            continue;
        };
        let at = flat.len() - tail.len();
        let line = starts.partition_point(|&s| s <= at);
        found.push((name.to_string(), value.to_string(), line));
    }
    found
}

/// The `//!` header of a source file, as text.
fn header(source: &str) -> String {
    source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" && !name.to_string_lossy().starts_with('.') {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn defaults_named_in_prose_and_man_pages_are_the_code_s() {
    let root = workspace();
    let mut texts = Vec::new();
    for doc in ["README.md", "docs/ARCHITECTURE.md", "BENCHMARKS.md"] {
        if let Ok(t) = std::fs::read_to_string(root.join(doc)) {
            texts.push((doc.to_string(), t));
        }
    }
    let mut files = Vec::new();
    sources(&root, &mut files);
    for f in files {
        let text = header(&std::fs::read_to_string(&f).unwrap());
        let shown = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
        texts.push((shown, text));
    }
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (file, text) in &texts {
        for (name, value, line) in inline_defaults(text) {
            checked += 1;
            let code = params::default_of(&name).unwrap_or_default();
            if code != value {
                // For a source file the line counts within its header.
                wrong.push(format!(
                    "{file}:{line}: {name}: documented {value:?}, the code's default is {code:?}"
                ));
            }
        }
    }
    eprintln!("{checked} documented defaults checked");
    assert!(checked > 10, "only {checked} documented defaults found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_declared_parameter_has_its_default_by_name() {
    for p in params::PARAMS {
        assert_eq!(params::default_of(p.name), Some(p.default));
    }
    assert_eq!(
        params::default_of("syslog_name"),
        Some(params::default::SYSLOG_NAME)
    );
    assert!(params::default_of("smtp_destination_recipient_limit").is_some());
    assert_eq!(params::default_of("no_such_parameter"), None);
}
