//! The `postern` command line: option parsing and dispatch.
//!
//! Every subcommand returns its exit status; nothing here calls
//! `process::exit` but [`main`].

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};
use postern_common::sysexits;
use postern_conf::embedded::{Layout, MASTER_CF};
use postern_conf::{Config, Diagnostic, ServicesFile, Source};

use crate::show;
use postern_common::check;

pub use postern_conf::DEFAULT_CONFIG_DIR;

#[derive(Debug, Parser)]
#[command(name = "postern", version, about = "Administer a postern instance")]
struct Cli {
    /// Configuration directory (default: $POSTERN_CONFIG, else /etc/postern
    /// if it has a main.cf, else the embedded default configuration).
    #[arg(short = 'c', long = "config", global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate main.cf, master.cf, the directories and accounts they name.
    Check,
    /// Submit a message, sendmail(1)-style: postern sendmail [-t] [-i] [-f sender] recipient... < message
    ///
    /// Options: -f/-r SENDER (-f '<>' for the null sender), -F 'Full Name',
    /// -t (recipients from To:/Cc:/Bcc:), -i/-oi (a lone '.' does not end
    /// the message), -bp (list the queue). Exit 0 queued, 75 not queued
    /// (try again), 65 refused, 64 usage, 74 cannot read the message, 70
    /// may have been queued, 78 configuration.
    #[command(disable_help_flag = true)]
    Sendmail {
        /// sendmail(1) options and recipients.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The queue: list, show ID, delete ID..., hold ID..., release ID..., flush.
    ///
    /// As root or the mail owner: 'list' every message with its queue,
    /// size, arrival, sender, pending recipients and last delay reason;
    /// 'show ID' its envelope, deliveries and message; 'hold' and 'release'
    /// move messages out of the way and back (ID... or ALL); 'delete'
    /// removes them (not while active); 'flush' retries every deferred
    /// message now.
    #[command(disable_help_flag = true)]
    Queue {
        /// The queue command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print parameters like postconf(1).
    #[command(disable_help_flag = true)]
    Config {
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// Only the parameters set in main.cf.
        #[arg(short = 'n', conflicts_with = "defaults")]
        non_default: bool,
        /// The default values.
        #[arg(short = 'd')]
        defaults: bool,
        /// Expand $name references in values.
        #[arg(short = 'x')]
        expand: bool,
        /// Print values only, without "name = ".
        #[arg(short = 'h', long = "values-only")]
        values_only: bool,
        /// Print master.cf entries (NAME or NAME/TYPE selects some).
        #[arg(short = 'M')]
        master: bool,
        /// Parameters (or, with -M, services) to print.
        names: Vec<String>,
    },
    /// Start the instance (as root): create what is missing, start the master.
    Start {
        /// Stay attached to the terminal and log to standard error.
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the instance: no new connections, requests in progress finish
    /// (up to shutdown_timeout), then everything left is killed.
    Stop,
    /// Stop the instance at once, killing requests in progress.
    Abort,
    /// Re-read main.cf and master.cf without refusing a connection, and
    /// recycle the services whose configuration changed (or SERVICE alone).
    Reload {
        /// Recycle only this service (NAME or NAME/TYPE), under the running
        /// configuration.
        service: Option<String>,
    },
    /// Show the master, every service with its children, and the queue.
    /// Exit 0 healthy, 1 degraded, 3 not running.
    Status {
        /// One JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Hand one message (standard input) to the local delivery agent.
    Deliver {
        /// Envelope sender.
        #[arg(short = 'f', value_name = "SENDER")]
        sender: String,
        /// Deliver as this account.
        #[arg(long)]
        user: String,
        /// The recipient address (default: the user's name).
        #[arg(long)]
        recipient: Option<String>,
        /// Append to this mbox file.
        #[arg(long, group = "dest")]
        mailbox: Option<PathBuf>,
        /// Deliver into this Maildir (ends with /).
        #[arg(long, group = "dest")]
        maildir: Option<PathBuf>,
        /// Pipe to this command line (repeat to run several, in order).
        #[arg(long, group = "dest")]
        program: Vec<String>,
    },
    /// Print the destination policy lines the aliases and .forward files need.
    Destinations,
    /// Write the man pages (man1/, man5/) under DIR, generated from these
    /// definitions (used by scripts/install and the package).
    #[command(hide = true)]
    Man {
        /// The man directory, e.g. /usr/share/man.
        dir: PathBuf,
    },
    /// Write the default main.cf and master.cf into DIR for editing.
    Init {
        /// Keep the queue and state inside DIR (DIR/queue, DIR/data).
        #[arg(long)]
        self_contained: bool,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// The directory to write (created if missing).
        dir: PathBuf,
    },
}

/// Parses the command line, runs the command, returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                sysexits::EX_USAGE
            } else {
                sysexits::EX_OK
            };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("postern: fatal: {e:#}");
            sysexits::EX_SOFTWARE
        }
    }
}

/// Prints the long help of subcommand `name` (for the pass-through
/// commands, whose options are their tool's own).
fn subcommand_help(name: &str) -> i32 {
    let mut cmd = Cli::command();
    cmd.build();
    match cmd.find_subcommand_mut(name) {
        Some(sub) => {
            let _ = sub.print_long_help();
            sysexits::EX_OK
        }
        None => sysexits::EX_SOFTWARE,
    }
}

fn run(mut cli: Cli) -> anyhow::Result<i32> {
    // Before anything else: the configuration directory, and every path
    // derived from it (program_directory, queue_directory, ...), must not
    // depend on the directory the command was started from.
    cli.config_dir = match absolute_config_dir(cli.config_dir.take()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("postern: fatal: {e}");
            return Ok(sysexits::EX_CONFIG);
        }
    };
    match cli.command {
        Command::Sendmail { ref args } | Command::Queue { ref args }
            if args.first().is_some_and(|a| a == "--help") =>
        {
            let name = if matches!(cli.command, Command::Sendmail { .. }) {
                "sendmail"
            } else {
                "queue"
            };
            Ok(subcommand_help(name))
        }
        Command::Man { dir } => match crate::manual::write(Cli::command(), &dir) {
            Ok(files) => {
                for f in files {
                    println!("postern: wrote {}", f.display());
                }
                Ok(0)
            }
            Err(e) => {
                eprintln!(
                    "postern: fatal: cannot write man pages under {}: {e}",
                    dir.display()
                );
                Ok(sysexits::EX_CANTCREAT)
            }
        },
        Command::Init {
            self_contained,
            force,
            dir,
        } => Ok(init(&dir, self_contained, force)),
        Command::Check => Ok(run_check(&source(cli.config_dir))),
        Command::Sendmail { args } => Ok(exec_queue_tool("postern-sendmail", cli.config_dir, args)),
        Command::Queue { args } => Ok(exec_queue_tool("postern-queue", cli.config_dir, args)),
        Command::Start { foreground } => {
            Ok(crate::control::start(&source(cli.config_dir), foreground))
        }
        Command::Stop => Ok(crate::control::stop(&source(cli.config_dir), false)),
        Command::Abort => Ok(crate::control::stop(&source(cli.config_dir), true)),
        Command::Reload { service } => Ok(crate::control::reload(
            &source(cli.config_dir),
            service.as_deref(),
        )),
        Command::Status { json } => Ok(crate::control::status(&source(cli.config_dir), json)),
        Command::Deliver {
            sender,
            user,
            recipient,
            mailbox,
            maildir,
            program,
        } => {
            use postern_common::handoff::Destination;
            let destination = match (mailbox, maildir, program.is_empty()) {
                (Some(p), None, true) => Destination::Mailbox(p),
                (None, Some(p), true) => Destination::Maildir(p),
                (None, None, false) => Destination::Programs(program),
                _ => {
                    eprintln!(
                        "postern: deliver needs exactly one of --mailbox, --maildir, --program"
                    );
                    return Ok(sysexits::EX_USAGE);
                }
            };
            let config = match crate::control::loaded(&source(cli.config_dir)) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            Ok(crate::deliver::run(
                &config,
                crate::deliver::Options {
                    sender,
                    user,
                    recipient,
                    destination,
                },
            ))
        }
        Command::Destinations => {
            let config = match crate::control::loaded(&source(cli.config_dir)) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let (suggestions, problems) = crate::destinations::suggest(&config);
            for p in &problems {
                eprintln!("postern: warning: {p}");
            }
            if suggestions.is_empty() {
                println!("# the destination policy already allows every file and program in the aliases and .forward files");
            }
            for s in suggestions {
                println!("{:<40} # {}", s.line, s.why);
            }
            Ok(0)
        }
        Command::Config {
            non_default,
            defaults,
            expand,
            values_only,
            master,
            names,
            ..
        } => {
            let which = match (non_default, defaults) {
                (true, _) => show::Which::NonDefault,
                (_, true) => show::Which::Defaults,
                _ => show::Which::Effective,
            };
            let style = show::Style {
                expand,
                values_only,
            };
            Ok(run_config(
                &source(cli.config_dir),
                which,
                style,
                master,
                &names,
            ))
        }
    }
}

/// Runs a queue tool from the directory of this program, with `-c DIR` when
/// one was given (else the tool finds the instance as sendmail(1) would:
/// $POSTERN_CONFIG, $MAIL_CONFIG, /etc/postern, the embedded configuration).
fn exec_queue_tool(tool: &str, dir: Option<PathBuf>, args: Vec<String>) -> i32 {
    use std::os::unix::process::CommandExt;
    let exe = postern_conf::installed_daemon_directory().join(tool);
    let mut cmd = std::process::Command::new(&exe);
    if let Some(d) = dir {
        cmd.arg("-c").arg(d);
    }
    cmd.args(args);
    let e = cmd.exec();
    eprintln!("postern: cannot run {}: {e}", exe.display());
    sysexits::EX_UNAVAILABLE
}

/// `-c DIR`, else `$POSTERN_CONFIG`, made absolute: canonicalised when it
/// exists (so a symbolic link or `..` leads to one fixed place), else joined
/// to the current directory (the command reports it missing later, by name).
pub fn absolute_config_dir(explicit: Option<PathBuf>) -> Result<Option<PathBuf>, String> {
    let Some(dir) = explicit.or_else(|| {
        std::env::var_os("POSTERN_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }) else {
        return Ok(None);
    };
    match std::fs::canonicalize(&dir) {
        Ok(real) => Ok(Some(real)),
        Err(_) => std::path::absolute(&dir)
            .map(Some)
            .map_err(|e| format!("cannot make {} absolute: {e}", dir.display())),
    }
}

/// Chooses the configuration: `-c`, `$POSTERN_CONFIG`, /etc/postern, embedded.
pub fn source(explicit: Option<PathBuf>) -> Source {
    postern_common::instance::choose_source(explicit, &["POSTERN_CONFIG"])
}

pub fn describe(source: &Source) -> String {
    match source {
        Source::Dir(d) => format!("configuration directory {}", d.display()),
        Source::Embedded(_) => {
            format!("embedded default configuration (no -c, no $POSTERN_CONFIG, no {DEFAULT_CONFIG_DIR}/main.cf)")
        }
    }
}

pub fn load(source: &Source) -> (Option<Config>, Vec<Diagnostic>) {
    let loaded = Config::load(source, &ServicesFile::system());
    (loaded.config, loaded.diagnostics)
}

fn run_check(source: &Source) -> i32 {
    eprintln!("postern: checking the {}", describe(source));
    let loaded = Config::load(source, &ServicesFile::system());
    let mut diags = loaded.diagnostics;
    // With errors, the checks run on what could be read (a syntax error
    // in one line hides nothing behind it).
    let checked = loaded.config.or(loaded.partial);
    if let Some(config) = &checked {
        diags.extend(check::check(config));
    }
    for d in &diags {
        eprintln!("{d}");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags
        .iter()
        .filter(|d| d.severity == postern_conf::Severity::Warning)
        .count();
    if errors > 0 {
        eprintln!("postern: {errors} error(s), {warnings} warning(s): the configuration cannot be used as it is");
        1
    } else {
        eprintln!("postern: configuration is valid ({warnings} warning(s))");
        0
    }
}

fn run_config(
    source: &Source,
    which: show::Which,
    style: show::Style,
    master: bool,
    names: &[String],
) -> i32 {
    let (config, diags) = load(source);
    let Some(config) = config else {
        for d in diags.iter().filter(|d| d.is_error()) {
            eprintln!("{d}");
        }
        eprintln!("postern: fatal: the configuration has errors (run postern check)");
        return sysexits::EX_CONFIG;
    };
    let mut out = std::io::stdout().lock();
    let mut status = 0;
    if master {
        let selected: Vec<_> = config
            .master
            .services
            .iter()
            .filter(|s| names.is_empty() || names.iter().any(|n| *n == s.name || *n == s.id()))
            .collect();
        for n in names {
            if !selected.iter().any(|s| *n == s.name || *n == s.id()) {
                eprintln!("postern: warning: {n}: no such master.cf service");
                status = 1;
            }
        }
        for s in selected {
            let _ = writeln!(out, "{}", show::service_line(s));
        }
        return status;
    }
    let table = show::parameters(&config, which);
    if names.is_empty() {
        for (name, raw) in &table {
            let _ = writeln!(out, "{}", show::line(&config, name, raw, which, style));
        }
        return status;
    }
    for name in names {
        let raw = match which {
            show::Which::Effective => config.raw(name),
            _ => table.get(name).cloned(),
        };
        match raw {
            Some(raw) => {
                let _ = writeln!(out, "{}", show::line(&config, name, &raw, which, style));
            }
            None => {
                eprintln!("postern: warning: {name}: unknown parameter");
                status = 1;
            }
        }
    }
    status
}

/// The default master.cf's demo port.
const DEMO_PORT: u16 = 10026;

/// The default master.cf with its demo service moved to a port free now
/// (or commented out when none can be found), and what was done.
fn demo_on_free_port() -> (String, Option<String>) {
    let default = format!("127.0.0.1:{DEMO_PORT} ");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port());
    let mut out = String::new();
    let mut note = None;
    for line in MASTER_CF.lines() {
        if line.starts_with(&default) {
            match &port {
                Ok(p) => {
                    out.push_str(&line.replacen(&default, &format!("127.0.0.1:{p} "), 1));
                    note = Some(format!(
                        "demo service on 127.0.0.1:{p} (free now; the default instance uses {DEMO_PORT})"
                    ));
                }
                Err(e) => {
                    out.push_str(&format!("#{line}"));
                    note = Some(format!(
                        "demo service commented out: no free port found ({e})"
                    ));
                }
            }
        } else if line.starts_with('#') && line.contains(&format!("127.0.0.1 {DEMO_PORT}")) {
            if let Ok(p) = &port {
                out.push_str(
                    &line.replace(&format!("127.0.0.1 {DEMO_PORT}"), &format!("127.0.0.1 {p}")),
                );
            } else {
                out.push_str(line);
            }
        } else if line.starts_with('#') && line.contains(&format!("127.0.0.1:{DEMO_PORT}")) {
            if let Ok(p) = &port {
                out.push_str(
                    &line.replace(&format!("127.0.0.1:{DEMO_PORT}"), &format!("127.0.0.1:{p}")),
                );
            } else {
                out.push_str(line);
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    (out, note)
}

fn init(dir: &Path, self_contained: bool, force: bool) -> i32 {
    let layout = if self_contained {
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Layout::inside(&absolute)
    } else {
        Layout::system()
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("postern: fatal: cannot create {}: {e}", dir.display());
        return sysexits::EX_CANTCREAT;
    }
    let program_dir = std::path::absolute(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .join("programs");
    // A self-contained instance runs beside the default one: its demo
    // service gets a port free now instead of the default's 10026.
    let (master_cf, demo_note) = if self_contained {
        demo_on_free_port()
    } else {
        (MASTER_CF.to_string(), None)
    };
    let files = [
        ("main.cf", layout.main_cf()),
        ("master.cf", master_cf),
        (
            "destinations",
            postern_conf::embedded::destinations(&program_dir),
        ),
    ];
    if !force {
        let existing: Vec<_> = files
            .iter()
            .map(|(n, _)| dir.join(n))
            .filter(|p| p.exists())
            .collect();
        if !existing.is_empty() {
            for p in existing {
                eprintln!(
                    "postern: fatal: {} exists; not overwritten (use --force)",
                    p.display()
                );
            }
            return sysexits::EX_CANTCREAT;
        }
    }
    for (name, text) in files {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("postern: fatal: cannot write {}: {e}", path.display());
            return sysexits::EX_CANTCREAT;
        }
        println!("postern: wrote {}", path.display());
    }
    if let Some(note) = demo_note {
        println!("postern: {note}");
    }
    // The trusted program directory starts empty: program delivery stays
    // off until an administrator puts a program there.
    match std::fs::create_dir_all(&program_dir) {
        Ok(()) => println!(
            "postern: created {} (empty: program delivery is off until you add programs)",
            program_dir.display()
        ),
        Err(e) => {
            eprintln!(
                "postern: fatal: cannot create {}: {e}",
                program_dir.display()
            );
            return sysexits::EX_CANTCREAT;
        }
    }
    0
}
