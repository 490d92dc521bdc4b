//! # postern-conf
//!
//! **Name**: postern-conf — main.cf, master.cf and the other files
//! administrators and users write, for postern.
//!
//! **Synopsis**:
//! ```no_run
//! use postern_conf::{Config, Source, ServicesFile};
//! let loaded = Config::load(&Source::Dir("/etc/postern".into()), &ServicesFile::system());
//! for d in &loaded.diagnostics { eprintln!("{d}"); }
//! let config = loaded.config.expect("configuration has errors");
//! let idle = config.time(postern_conf::params::MAX_IDLE);
//! # let _ = idle;
//! ```
//!
//! **Description**: reads the two files a Postfix administrator already knows,
//! with Postfix's syntax: `main.cf` (`name = value`, continuation lines,
//! whole-line comments, `$name` expansion in all its forms, typed values) and
//! `master.cf` (eight fields per service, `-o` overrides, `{ }` grouping).
//! Parsing is pure and in two stages — text to raw entries
//! ([`maincf`], [`mastercf`]), then raw entries to a validated [`Config`] — and
//! every problem is reported with `file:line`, all at once. No input makes the
//! parser panic. With no configuration directory, an embedded default
//! configuration is used ([`embedded`]).
//!
//! The other files an administrator or a user writes are parsed here too,
//! purely, with `file:line` in every problem: aliases(5) ([`aliases`]),
//! `.forward` ([`forward`]), the allowed-destinations policy with its
//! matching ([`policy`]), transport(5) tables ([`transport`]), the command
//! attributes of master.cf's spawn and pipe services ([`attributes`]:
//! `user=`, `argv=`, `flags=`), and the command lines of program deliveries
//! ([`command_line`], smrsh's forms).
//!
//! **Security**: holds no privileges, and reads no file itself but main.cf
//! and master.cf. Its input (the configuration files) is trusted to come
//! from the administrator but is still validated in full: malformed text
//! yields diagnostics, never a panic. `.forward` and
//! `~/.postern-destinations` text comes from users and is untrusted: it is
//! parsed the same way, into targets and rules that the callers check.
//!
//! **Configuration**: the parameters, their types and defaults are declared
//! once, in [`params::PARAMS`]; `postern config -d` prints them.
//!
//! **See also**: postconf(5), master(5) from Postfix; `postern check`,
//! `postern config`.

pub mod aliases;
pub mod attributes;
pub mod command_line;
pub mod diag;
pub mod embedded;
pub mod expand;
pub mod forward;
pub mod host;
pub mod logical;
pub mod maincf;
pub mod mastercf;
pub mod params;
pub mod policy;
pub mod programs;
pub mod transport;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use diag::{ConfigErrors, Diagnostic, Severity};
pub use maincf::{MainCf, MainEntry};
pub use mastercf::{
    Endpoint, MasterCf, MaxProc, Override, PortNames, ServiceEntry, ServiceType, ServicesFile,
    Wakeup,
};
pub use params::{Kind, ParamSpec, Value};

/// The configuration directory of the system instance (`config_directory`'s
/// default), used when no `-c`, `$POSTERN_CONFIG` or `MAIL_CONFIG` names one.
pub const DEFAULT_CONFIG_DIR: &str = params::default::CONFIG_DIRECTORY;

/// Where a configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory holding `main.cf` and `master.cf`.
    Dir(PathBuf),
    /// The configuration compiled into the binary, for this instance layout.
    Embedded(embedded::Layout),
}

impl Source {
    /// The text of main.cf and master.cf with the names to report them under.
    fn read(&self, diags: &mut Vec<Diagnostic>) -> Option<[(String, Vec<u8>); 2]> {
        match self {
            Source::Dir(dir) => {
                let mut read = |name: &str| {
                    let path = dir.join(name);
                    let shown = path.display().to_string();
                    match std::fs::read(&path) {
                        Ok(bytes) => Some((shown, bytes)),
                        Err(e) => {
                            diags.push(Diagnostic::error(
                                &shown,
                                None,
                                format!("cannot read file: {e}"),
                            ));
                            None
                        }
                    }
                };
                let main = read("main.cf");
                let master = read("master.cf");
                Some([main?, master?])
            }
            Source::Embedded(layout) => Some([
                ("(embedded)/main.cf".into(), layout.main_cf().into_bytes()),
                (
                    "(embedded)/master.cf".into(),
                    embedded::MASTER_CF.as_bytes().to_vec(),
                ),
            ]),
        }
    }
}

/// The outcome of loading: the diagnostics, and the configuration when none
/// of them is an error.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// A usable configuration, if there were no errors.
    pub config: Option<Config>,
    /// Every warning and error, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// For `postern check` only, when there are errors: the configuration
    /// as far as it could be read (the master.cf entries that parsed),
    /// provided every declared parameter still has a value, so that the
    /// checks behind a syntax error are reported at once too. Never run.
    pub partial: Option<Config>,
}

impl Loaded {
    /// The configuration, or every error as one `Err`.
    pub fn into_result(self) -> Result<Config, ConfigErrors> {
        match self.config {
            Some(c) => Ok(c),
            None => Err(ConfigErrors(
                self.diagnostics
                    .into_iter()
                    .filter(Diagnostic::is_error)
                    .collect(),
            )),
        }
    }
}

/// A validated configuration: main.cf, master.cf, and every known parameter's
/// expanded, type-checked value.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub source: Source,
    /// main.cf as parsed (shared by every service view).
    pub main: Arc<MainCf>,
    /// master.cf as parsed (shared by every service view: a copy per view
    /// made starting N services quadratic in N).
    pub master: Arc<MasterCf>,
    /// For a per-service view: the service name and its `-o` overrides.
    service: Option<(String, Vec<Override>)>,
    /// Whether master.cf makes this a Postfix instance (Postfix's defaults
    /// then apply): worked out once per parse, as it reads every service.
    postfix: bool,
    /// Known parameters, expanded and checked.
    values: BTreeMap<String, Value>,
}

/// Raw values by layer: service overrides, then main.cf, then defaults.
struct Layers<'a> {
    main: &'a MainCf,
    master: &'a MasterCf,
    source: &'a Source,
    service: Option<&'a (String, Vec<Override>)>,
    /// See `Config::postfix`.
    postfix: bool,
}

impl Layers<'_> {
    fn is_service(&self, name: &str) -> bool {
        self.master.services.iter().any(|s| s.name == name)
            || self.service.is_some_and(|(s, _)| s == name)
    }

    /// Kind and default text of a known parameter.
    fn known(&self, name: &str) -> Option<(Kind, String)> {
        if let Some(spec) = params::spec(name) {
            let default = match (name, self.source) {
                (params::CONFIG_DIRECTORY, Source::Dir(dir)) => dir.display().to_string(),
                (params::MYHOSTNAME, _) => host::myhostname_default(
                    host::system_hostname(),
                    self.main.get(params::MYDOMAIN).map(|e| e.value.as_str()),
                ),
                (params::MYDOMAIN, _) => match self.main.get(params::MYHOSTNAME) {
                    Some(e) => host::mydomain_default(&e.value),
                    None => host::mydomain_default(&host::myhostname_default(
                        host::system_hostname(),
                        None,
                    )),
                },
                (name, _) if self.postfix => programs::POSTFIX_DEFAULTS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or_else(|| spec.default.to_string(), |(_, d)| d.to_string()),
                _ => spec.default.to_string(),
            };
            return Some((spec.kind, default));
        }
        params::service_param(name, |s| self.is_service(s)).map(|(k, d)| (k, d.to_string()))
    }

    fn raw(&self, name: &str) -> Option<String> {
        if let Some((service, overrides)) = self.service {
            if let Some(o) = overrides.iter().rev().find(|o| o.name == name) {
                return Some(o.value.clone());
            }
            if name == "service_name" || name == "process_name" {
                return Some(service.clone());
            }
        }
        if let Some(e) = self.main.get(name) {
            return Some(e.value.clone());
        }
        self.known(name).map(|(_, d)| d)
    }

    /// Expands and checks `name`; `Err` carries the message.
    fn value(&self, name: &str, kind: Kind) -> (Result<Value, String>, Vec<String>) {
        let lookup = |n: &str| self.raw(n);
        let raw = self.raw(name).unwrap_or_default();
        match expand::expand(&raw, Some(name), &lookup) {
            Ok(e) => {
                let warnings = e
                    .undefined
                    .iter()
                    .map(|u| format!("{name}: ${u} is not defined (it expands to nothing)"))
                    .collect();
                (
                    params::check(kind, &e.value).map_err(|m| format!("{name}: {m}")),
                    warnings,
                )
            }
            Err(err) => (Err(format!("{name}: {err}")), Vec::new()),
        }
    }
}

impl Config {
    /// Reads, parses and validates a configuration.
    pub fn load(source: &Source, ports: &dyn PortNames) -> Loaded {
        let mut diags = Vec::new();
        let Some([(main_file, main_text), (master_file, master_text)]) = source.read(&mut diags)
        else {
            return Loaded {
                config: None,
                diagnostics: diags,
                partial: None,
            };
        };
        let main = maincf::parse_main_cf(&main_file, &main_text, &mut diags);
        let master = mastercf::parse_master_cf(&master_file, &master_text, ports, &mut diags);
        Self::validate(source.clone(), main, master, diags)
    }

    /// Reads main.cf alone (master.cf taken as empty): enough to find an
    /// instance's directories when master.cf has errors, so that `postern
    /// stop` and `status` still work while the administrator fixes it.
    pub fn load_main_only(source: &Source, ports: &dyn PortNames) -> Loaded {
        let mut diags = Vec::new();
        let Some([(main_file, main_text), (master_file, _)]) = source.read(&mut diags) else {
            return Loaded {
                config: None,
                diagnostics: diags,
                partial: None,
            };
        };
        let main = maincf::parse_main_cf(&main_file, &main_text, &mut diags);
        let master = mastercf::parse_master_cf(&master_file, b"", ports, &mut diags);
        Self::validate(source.clone(), main, master, diags)
    }

    /// Parses and validates configuration text (for tests and `postern check`
    /// of files that are not in place yet).
    pub fn from_text(
        main_file: &str,
        main: &[u8],
        master_file: &str,
        master: &[u8],
        ports: &dyn PortNames,
    ) -> Loaded {
        let mut diags = Vec::new();
        let main = maincf::parse_main_cf(main_file, main, &mut diags);
        let master = mastercf::parse_master_cf(master_file, master, ports, &mut diags);
        let dir = Path::new(main_file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Self::validate(Source::Dir(dir), main, master, diags)
    }

    fn validate(source: Source, main: MainCf, master: MasterCf, diags: Vec<Diagnostic>) -> Loaded {
        Self::validate_with(source, Arc::new(main), Arc::new(master), None, None, diags)
    }

    /// `validate`, with whether master.cf makes a Postfix instance already
    /// known (a service view of a validated configuration).
    fn validate_with(
        source: Source,
        main: Arc<MainCf>,
        master: Arc<MasterCf>,
        postfix: Option<bool>,
        service: Option<(String, Vec<Override>)>,
        mut diags: Vec<Diagnostic>,
    ) -> Loaded {
        let postfix = postfix.unwrap_or_else(|| {
            programs::postfix_instance(master.services.iter().map(|s| s.command.as_str()))
        });
        let layers = Layers {
            main: &main,
            master: &master,
            source: &source,
            service: service.as_ref(),
            postfix,
        };
        let mut values = BTreeMap::new();
        // Every parameter set in main.cf: known ones checked, unknown ones kept.
        for entry in &main.entries {
            match layers.known(&entry.name) {
                Some((kind, _)) => {
                    let (result, warnings) = layers.value(&entry.name, kind);
                    for w in warnings {
                        diags.push(Diagnostic::warning(&main.file, Some(entry.line), w));
                    }
                    match result {
                        Ok(v) => {
                            values.insert(entry.name.clone(), v);
                        }
                        Err(m) => diags.push(Diagnostic::error(&main.file, Some(entry.line), m)),
                    }
                }
                None => diags.push(Diagnostic::warning(
                    &main.file,
                    Some(entry.line),
                    format!(
                        "unknown parameter {} (kept, but postern does not use it)",
                        entry.name
                    ),
                )),
            }
        }
        // Every master.cf override, checked in the context of its service
        // (in a service view, only that service's: the others were checked
        // with the configuration the view is taken from).
        let view_of = service.as_ref().map(|(name, _)| name.as_str());
        for s in master
            .services
            .iter()
            .filter(|s| view_of.is_none_or(|v| v == s.name))
        {
            let ctx = (s.name.clone(), s.overrides.clone());
            let svc = Layers {
                service: Some(&ctx),
                ..layers
            };
            for o in &s.overrides {
                match svc.known(&o.name) {
                    Some((kind, _)) => {
                        let (result, warnings) = svc.value(&o.name, kind);
                        for w in warnings {
                            diags.push(Diagnostic::warning(&master.file, Some(s.line), format!("-o {w}")));
                        }
                        if let Err(m) = result {
                            diags.push(Diagnostic::error(&master.file, Some(s.line), format!("-o {m}")));
                        }
                    }
                    None => diags.push(Diagnostic::warning(
                        &master.file,
                        Some(s.line),
                        format!("service {}: -o {}: unknown parameter (kept, but postern does not use it)", s.id(), o.name),
                    )),
                }
            }
        }
        // A parameter whose value is wrong is reported; for the checks that
        // run on the rest (`Loaded::partial`) it takes its plain default.
        let mut fallback: BTreeMap<String, Value> = BTreeMap::new();
        // Defaults (and, in a service view, overrides) of every declared parameter.
        for spec in params::PARAMS {
            let overridden = layers
                .service
                .is_some_and(|(_, o)| o.iter().any(|o| o.name == spec.name));
            if values.contains_key(spec.name) && !overridden {
                continue;
            }
            match layers.value(spec.name, spec.kind).0 {
                Ok(v) => {
                    values.insert(spec.name.to_string(), v);
                }
                // Reported above where the cause is (main.cf or -o); a bad
                // default that refers to a bad setting is not repeated.
                Err(m) => {
                    if !diags.iter().any(Diagnostic::is_error) {
                        diags.push(Diagnostic::error(
                            &main.file,
                            None,
                            format!("default of {m}"),
                        ));
                    }
                    if let Some(v) = layers
                        .known(spec.name)
                        .filter(|(_, d)| !d.contains('$'))
                        .and_then(|(kind, d)| params::check(kind, &d).ok())
                    {
                        fallback.insert(spec.name.to_string(), v);
                    }
                }
            }
        }
        if let Some((_, overrides)) = layers.service {
            for o in overrides {
                if let Some((kind, _)) = layers.known(&o.name) {
                    if let Ok(v) = layers.value(&o.name, kind).0 {
                        values.insert(o.name.clone(), v);
                    }
                }
            }
        }
        // Present problems file by file, line by line (stable: same-line order kept).
        diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        let ok = !diags.iter().any(Diagnostic::is_error);
        if !ok {
            for (name, v) in fallback {
                values.entry(name).or_insert(v);
            }
        }
        let complete = params::PARAMS.iter().all(|p| values.contains_key(p.name));
        let config = Config {
            source,
            main,
            master,
            service,
            postfix,
            values,
        };
        let (config, partial) = match (ok, complete) {
            (true, _) => (Some(config), None),
            (false, true) => (None, Some(config)),
            (false, false) => (None, None),
        };
        Loaded {
            config,
            diagnostics: diags,
            partial,
        }
    }

    /// The view of this configuration that a child of `entry` sees: main.cf
    /// with the service's `-o` overrides applied and `$service_name` defined.
    pub fn for_service(&self, entry: &ServiceEntry) -> Result<Config, ConfigErrors> {
        self.with_overrides(&entry.name, &entry.overrides)
    }

    /// main.cf with `overrides` applied, for service `service`.
    pub fn with_overrides(
        &self,
        service: &str,
        overrides: &[Override],
    ) -> Result<Config, ConfigErrors> {
        self.for_child(service, overrides, self.postfix)
    }

    /// [`Config::with_overrides`] in an instance that master.cf makes (or
    /// not) a Postfix instance, as the master found: a child reads main.cf
    /// alone ([`Config::load_main_only`]), which cannot tell.
    pub fn for_child(
        &self,
        service: &str,
        overrides: &[Override],
        postfix_instance: bool,
    ) -> Result<Config, ConfigErrors> {
        Self::validate_with(
            self.source.clone(),
            Arc::clone(&self.main),
            Arc::clone(&self.master),
            Some(postfix_instance),
            Some((service.to_string(), overrides.to_vec())),
            Vec::new(),
        )
        .into_result()
    }

    fn value(&self, name: &str) -> &Value {
        match self.values.get(name) {
            Some(v) => v,
            None => panic!("parameter {name} is not declared in postern_conf::params"),
        }
    }

    /// The expanded text of a declared text, list or choice parameter.
    pub fn text(&self, name: &str) -> &str {
        match self.value(name) {
            Value::Text(t) => t,
            other => panic!("parameter {name} is not text: {other:?}"),
        }
    }

    /// A declared list parameter, split into items.
    pub fn list(&self, name: &str) -> Vec<String> {
        params::split_list(self.text(name))
    }

    /// A declared time parameter.
    pub fn time(&self, name: &str) -> Duration {
        match self.value(name) {
            Value::Time(d) => *d,
            other => panic!("parameter {name} is not a time: {other:?}"),
        }
    }

    /// A declared number parameter.
    pub fn int(&self, name: &str) -> i64 {
        match self.value(name) {
            Value::Int(n) => *n,
            other => panic!("parameter {name} is not a number: {other:?}"),
        }
    }

    /// A declared yes/no parameter.
    pub fn bool(&self, name: &str) -> bool {
        match self.value(name) {
            Value::Bool(b) => *b,
            other => panic!("parameter {name} is not yes/no: {other:?}"),
        }
    }

    /// `<service>_time_limit`, or `command_time_limit` when it is not set.
    pub fn service_time_limit(&self, service: &str) -> Duration {
        match self.values.get(&format!("{service}_time_limit")) {
            Some(Value::Time(d)) => *d,
            _ => self.time(params::COMMAND_TIME_LIMIT),
        }
    }

    /// The default (unexpanded) of a known parameter, as this configuration
    /// derives it (`myhostname` and `mydomain` from the host's name).
    pub fn default_text(&self, name: &str) -> Option<String> {
        self.layers().known(name).map(|(_, d)| d)
    }

    /// The raw (unexpanded) value of any parameter: override, main.cf, default.
    pub fn raw(&self, name: &str) -> Option<String> {
        self.layers().raw(name)
    }

    /// The expanded value of any parameter (known or not).
    pub fn expanded(&self, name: &str) -> Option<Result<String, expand::ExpandError>> {
        let layers = self.layers();
        let raw = layers.raw(name)?;
        Some(expand::expand(&raw, Some(name), &|n: &str| layers.raw(n)).map(|e| e.value))
    }

    /// The expanded value of `text` in this configuration (e.g. a default).
    pub fn expand_text(&self, text: &str) -> Result<String, expand::ExpandError> {
        let layers = self.layers();
        expand::expand(text, None, &|n: &str| layers.raw(n)).map(|e| e.value)
    }

    fn layers(&self) -> Layers<'_> {
        Layers {
            main: &self.main,
            master: &self.master,
            source: &self.source,
            service: self.service.as_ref(),
            postfix: self.postfix,
        }
    }

    /// The effective `daemon_directory`: as set, or the directory of the
    /// running program when empty.
    pub fn daemon_directory(&self) -> PathBuf {
        let set = self.text(params::DAEMON_DIRECTORY);
        if !set.is_empty() {
            return PathBuf::from(set);
        }
        installed_daemon_directory()
    }

    /// Whether master.cf names Postfix's own daemons (see [`programs`]).
    pub fn postfix_instance(&self) -> bool {
        self.postfix
    }

    /// Who runs `entry` (see [`programs::runner`]).
    pub fn runner(&self, entry: &ServiceEntry) -> programs::Runner {
        programs::runner(&entry.command, self.postfix_instance())
    }

    /// Where postern's own programs are: `daemon_directory` (as set, or the
    /// running program's) outside a Postfix instance; inside one,
    /// `daemon_directory` is Postfix's and postern's are where postern is
    /// installed.
    pub fn postern_directory(&self) -> PathBuf {
        if self.postfix_instance() {
            installed_daemon_directory()
        } else {
            self.daemon_directory()
        }
    }

    /// The process limit of `entry` (`None` = unlimited).
    pub fn process_limit(&self, entry: &ServiceEntry) -> Option<u32> {
        let default = u32::try_from(self.int(params::DEFAULT_PROCESS_LIMIT)).unwrap_or(u32::MAX);
        entry.process_limit(default)
    }
}

/// Where the daemons are when `daemon_directory` is empty: the directory of
/// the running program when it holds `postern-master` (a build tree, or a
/// daemon itself), else `../libexec/postern` from it (an install: `postern`
/// in `PREFIX/sbin`, the daemons in `PREFIX/libexec/postern`, so any
/// `PREFIX` works without a setting).
pub fn installed_daemon_directory() -> PathBuf {
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    if here.join("postern-master").is_file() {
        return here;
    }
    let libexec = here.join("../libexec/postern");
    match std::fs::canonicalize(&libexec) {
        Ok(dir) if dir.join("postern-master").is_file() => dir,
        _ => here,
    }
}
