//! `postern man DIR`: the man pages, generated from the command-line
//! definitions (clap_mangen) so that they cannot drift from `--help`:
//! postern(1), one postern-COMMAND(1) per subcommand, and postern.conf(5)
//! from the parameter table ([`postern_conf::params`]), each parameter
//! with its default and meaning. Written to `DIR/man1` and `DIR/man5`.

use std::path::Path;

use postern_conf::params;

/// Writes every page under `dir`; returns the files written.
pub fn write(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let man1 = dir.join("man1");
    let man5 = dir.join("man5");
    std::fs::create_dir_all(&man1)?;
    std::fs::create_dir_all(&man5)?;
    let mut written = Vec::new();
    let mut page = |path: std::path::PathBuf, bytes: Vec<u8>| -> std::io::Result<()> {
        std::fs::write(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    page(man1.join("postern.1"), buf)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("postern-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("postern {}", sub.get_name()));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        page(man1.join(format!("{name}.1")), buf)?;
    }
    page(man5.join("postern.conf.5"), conf_page().into_bytes())?;
    Ok(written)
}

/// Escapes text for roff: backslashes, and a leading dot or quote.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// postern.conf(5): every parameter postern knows, with its default.
fn conf_page() -> String {
    let mut out = String::from(
        ".TH POSTERN.CONF 5 \"\" \"postern\" \"File Formats\"\n\
         .SH NAME\npostern.conf \\- the main.cf parameters postern knows\n\
         .SH DESCRIPTION\npostern reads Postfix's main.cf syntax (see \\fBpostconf\\fR(5)). \
         These are the parameters it uses, each with its default; where postern \
         differs from Postfix on purpose, or adds a parameter of its own, the \
         description says so. \\fBpostern config \\-d\\fR prints the same defaults.\n\
         Per\\-service parameters \\fISERVICE\\fB_time_limit\\fR, \
         \\fISERVICE\\fB_destination_concurrency_limit\\fR and \
         \\fISERVICE\\fB_destination_recipient_limit\\fR are recognised for every \
         master.cf service.\n.SH PARAMETERS\n",
    );
    for p in params::PARAMS {
        let default = if p.default.is_empty() {
            "(empty)".to_string()
        } else {
            p.default.to_string()
        };
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR (default: {})\n{}\n",
            roff(p.name),
            roff(&default),
            roff(p.doc)
        ));
    }
    out.push_str(".SH SEE ALSO\n\\fBpostern\\fR(1), \\fBpostconf\\fR(5), \\fBmaster\\fR(5)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conf_page_lists_every_parameter() {
        let page = conf_page();
        for p in params::PARAMS {
            assert!(
                page.contains(&format!("\\fB{}\\fR", roff(p.name))),
                "{}",
                p.name
            );
        }
        assert!(page.contains("local_destination_concurrency_limit\\fR (default: 2)"));
    }
}
