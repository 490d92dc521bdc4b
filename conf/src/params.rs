//! The main.cf parameters postern knows, each declared once.
//!
//! Every parameter has a name, a type, a default (as main.cf text, so that
//! defaults may refer to other parameters with `$name`) and a one-line
//! description. Names and defaults follow Postfix's postconf(5) where Postfix
//! has the parameter; where postern differs on purpose the description says so.
//! Parameters of the form `<service>_time_limit` (and the other per-service
//! suffixes in [`SERVICE_SUFFIXES`]) are recognised for every master.cf service.

use std::time::Duration;

/// The type of a parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text (after `$name` expansion).
    Text,
    /// A whole number no smaller than `min`.
    Int {
        /// The smallest value accepted.
        min: i64,
    },
    /// `yes` or `no`.
    Bool,
    /// A time: a number and a unit (`s m h d w`); a bare number is in `unit`.
    Time {
        /// The unit of a bare number.
        unit: char,
    },
    /// Names separated by commas and/or white space.
    List,
    /// One word out of a fixed set.
    Choice(&'static [&'static str]),
    /// Words each out of a fixed set.
    ChoiceList(&'static [&'static str]),
}

/// A declared parameter.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// The main.cf name.
    pub name: &'static str,
    /// The type of its value.
    pub kind: Kind,
    /// The default, as main.cf text.
    pub default: &'static str,
    /// One line saying what it is for.
    pub doc: &'static str,
}

macro_rules! params {
    ($( $konst:ident $name:literal $kind:expr, $default:literal, $doc:literal; )*) => {
        $(
            #[doc = $doc]
            pub const $konst: &str = $name;
        )*
        /// Each parameter's default, as main.cf text, under the name of its
        /// key (`default::SYSLOG_NAME`): for a value needed before main.cf
        /// is read, and for the few constants that must equal a default.
        pub mod default {
            $(
                #[doc = concat!("The default of `", $name, "`.")]
                pub const $konst: &str = $default;
            )*
        }
        /// Every declared parameter, sorted by name.
        pub static PARAMS: &[ParamSpec] = &[
            $( ParamSpec { name: $name, kind: $kind, default: default::$konst, doc: $doc }, )*
        ];
    };
}

const SYSLOG_FACILITIES: &[&str] = &[
    "mail", "daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
];
const LOCK_METHODS: &[&str] = &["fcntl", "flock", "dotlock"];
const INET_PROTOCOL_NAMES: &[&str] = &["all", "ipv4", "ipv6"];
const TLS_LEVELS: &[&str] = &["none", "may", "encrypt", "verify", "secure"];
const SASL_OPTIONS: &[&str] = &["noplaintext", "noanonymous"];

params! {
    ALIAS_MAPS "alias_maps" Kind::List, "hash:/etc/aliases",
        "Alias files (a 'type:' prefix such as hash: is accepted and ignored: postern reads the text file).";
    AUTHORIZED_MAILQ_USERS "authorized_mailq_users" Kind::List, "static:anyone",
        "Who may list the queue with mailq or sendmail -bp: static:anyone, or a list of user names (root and the mail owner always may).";
    BOUNCE_NOTICE_RECIPIENT "bounce_notice_recipient" Kind::Text, "postmaster",
        "Who hears of program-delivery failures and of bounces that could not be returned.";
    COMMAND_TIME_LIMIT "command_time_limit" Kind::Time { unit: 's' }, "1000s",
        "Time limit for one external command run by spawn or a command transport, unless <service>_time_limit says otherwise.";
    CONFIG_DIRECTORY "config_directory" Kind::Text, "/etc/postern",
        "Directory holding main.cf, master.cf and the destination policy (postern's own; Postfix uses /etc/postfix).";
    DAEMON_DIRECTORY "daemon_directory" Kind::Text, "",
        "Directory of the postern-* daemon programs; empty means the directory of the running program when it holds postern-master (a build tree), else ../libexec/postern from it (an install).";
    DAEMON_TIMEOUT "daemon_timeout" Kind::Time { unit: 's' }, "18000s",
        "How long a child may spend on one request before its watchdog terminates it.";
    DATA_DIRECTORY "data_directory" Kind::Text, "/var/lib/postern",
        "Directory of the master's state (pid lock, control socket), owned by root (Postfix's is the mail owner's).";
    DEFAULT_DESTINATION_CONCURRENCY_LIMIT "default_destination_concurrency_limit" Kind::Int { min: 1 }, "20",
        "The most deliveries in parallel to one transport (the queue manager's window grows to it).";
    DEFAULT_PRIVS "default_privs" Kind::Text, "nobody",
        "Account used for deliveries on behalf of root-owned accounts; neither root nor mail_owner.";
    DEFAULT_PROCESS_LIMIT "default_process_limit" Kind::Int { min: 1 }, "100",
        "Child process limit of a master.cf service whose maxproc field is '-'.";
    DEFAULT_TRANSPORT "default_transport" Kind::Text, "error:mail for remote domains is not delivered by postern",
        "Transport of addresses whose domain is not in mydestination and not in transport_maps.";
    DELIVER_LOCK_ATTEMPTS "deliver_lock_attempts" Kind::Int { min: 1 }, "20",
        "How many times local tries to lock a mailbox before it defers the delivery.";
    DELIVER_LOCK_DELAY "deliver_lock_delay" Kind::Time { unit: 's' }, "1s",
        "The longest pause between two attempts to lock a mailbox.";
    DESTINATION_POLICY "destination_policy" Kind::Text, "$config_directory/destinations",
        "The allowed-destinations policy file that local checks every instruction against (postern's own).";
    DUPLICATE_FILTER_LIMIT "duplicate_filter_limit" Kind::Int { min: 0 }, "1000",
        "Most recipients (at submission; compared ignoring ASCII case) and deliveries (after alias and .forward expansion) remembered per message to drop repeats; 0: no limit.";
    ENABLE_ORIGINAL_RECIPIENT "enable_original_recipient" Kind::Bool, "yes",
        "Whether local gives a program the recipient as given to postern (X-Original-To: header, $ORIGINAL_RECIPIENT).";
    EXPORT_ENVIRONMENT "export_environment" Kind::List, "TZ MAIL_CONFIG LANG",
        "Environment variables passed on to external commands (name, or name=value).";
    HOME_MAILBOX "home_mailbox" Kind::Text, "",
        "Mailbox relative to the home directory ('Mailbox' for mbox, 'Maildir/' for Maildir); empty: mail_spool_directory/<user>.";
    IMPORT_ENVIRONMENT "import_environment" Kind::List, "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME",
        "The environment the master passes to Postfix's daemons (name, or name=value), as Postfix's master does; postern's own children get theirs from the master's.";
    INET_INTERFACES "inet_interfaces" Kind::List, "loopback-only",
        "Addresses inet services without a host part listen on: all, loopback-only, or addresses (Postfix's default is all; postern starts on loopback).";
    INET_PROTOCOLS "inet_protocols" Kind::ChoiceList(INET_PROTOCOL_NAMES), "all",
        "Address families of inet services: all, ipv4, ipv6.";
    INITIAL_DESTINATION_CONCURRENCY "initial_destination_concurrency" Kind::Int { min: 1 }, "5",
        "Deliveries in parallel to a transport at first; grows on success, shrinks on failure.";
    IPC_TIMEOUT "ipc_timeout" Kind::Time { unit: 's' }, "3600s",
        "Time limit for reading or writing one exchange on a connection.";
    LOCAL_DELIVERY_BATCH_LIMIT "local_delivery_batch_limit" Kind::Int { min: 1 }, "32",
        "Most messages for one local user the queue manager hands to local in one exchange (at most 64; 1: one per exchange).";
    LOCAL_DESTINATION_CONCURRENCY_LIMIT "local_destination_concurrency_limit" Kind::Int { min: 1 }, "2",
        "The most deliveries in parallel to one local user (Postfix's default, 2).";
    MAIL_OWNER "mail_owner" Kind::Text, "postern",
        "Unprivileged account that owns the queue and runs unprivileged services (Postfix's default is postfix).";
    MAIL_SPOOL_DIRECTORY "mail_spool_directory" Kind::Text, "/var/mail",
        "Directory of the users' mbox files when home_mailbox is empty.";
    MAILBOX_DELIVERY_LOCK "mailbox_delivery_lock" Kind::ChoiceList(LOCK_METHODS), "fcntl, dotlock",
        "How local locks an mbox file: fcntl, flock and/or dotlock.";
    MAILBOX_SIZE_LIMIT "mailbox_size_limit" Kind::Int { min: 0 }, "51200000",
        "The largest an mbox file may grow to, in bytes (0: no limit).";
    MAILLOG_FILE "maillog_file" Kind::Text, "",
        "File every postern process logs to; empty means syslog (or stderr with start --foreground).";
    MAX_IDLE "max_idle" Kind::Time { unit: 's' }, "100s",
        "How long an idle child waits for its next request before it exits.";
    MAX_USE "max_use" Kind::Int { min: 1 }, "100",
        "How many requests a child serves before it exits.";
    MAXIMAL_BACKOFF_TIME "maximal_backoff_time" Kind::Time { unit: 's' }, "4000s",
        "The longest wait before retrying a deferred message.";
    MAXIMAL_QUEUE_LIFETIME "maximal_queue_lifetime" Kind::Time { unit: 'd' }, "5d",
        "How long a message may stay deferred before it bounces.";
    MESSAGE_SIZE_LIMIT "message_size_limit" Kind::Int { min: 0 }, "10240000",
        "The largest message submission accepts, in bytes (0: no limit).";
    MINIMAL_BACKOFF_TIME "minimal_backoff_time" Kind::Time { unit: 's' }, "300s",
        "The shortest wait before retrying a deferred message.";
    MYDESTINATION "mydestination" Kind::List, "$myhostname, localhost.$mydomain, localhost",
        "Domains delivered by the local transport (an address without a domain is qualified with $myorigin first).";
    MYDOMAIN "mydomain" Kind::Text, "",
        "This machine's domain; the default is $myhostname minus its first label, or localdomain (derived when the configuration is read, as Postfix does).";
    MYHOSTNAME "myhostname" Kind::Text, "",
        "This machine's fully qualified name in Received: headers, Message-IDs and bounces; the default is the system host name, with .$mydomain (or .localdomain) appended when it has no dot (derived when the configuration is read, as Postfix does).";
    MYORIGIN "myorigin" Kind::Text, "$myhostname",
        "The domain locally posted mail comes from: the submitting user's address, an envelope sender or a recipient without a domain get @$myorigin (a null client sets it to its domain, e.g. $mydomain).";
    PROGRAM_DIRECTORY "program_directory" Kind::Text, "$config_directory/programs",
        "The trusted program directory of program delivery, with its flag files (postern's own).";
    PROGRAM_OUTPUT_IS_FAILURE "program_output_is_failure" Kind::Bool, "no",
        "Count a delivery program that printed anything as failed, even if it exited 0 (postern's own).";
    QMGR_MESSAGE_ACTIVE_LIMIT "qmgr_message_active_limit" Kind::Int { min: 1 }, "20000",
        "The most messages the queue manager holds in the active queue.";
    QUEUE_DIRECTORY "queue_directory" Kind::Text, "/var/spool/postern",
        "Directory of the queue and of the private/ and public/ unix endpoints.";
    QUEUE_RUN_DELAY "queue_run_delay" Kind::Time { unit: 's' }, "300s",
        "How often the queue manager scans the deferred queue.";
    RECIPIENT_DELIMITER "recipient_delimiter" Kind::Text, "",
        "Characters that separate a user name from an address extension (user+ext); empty: none.";
    RELAYHOST "relayhost" Kind::Text, "",
        "Next hop of mail for remote domains: [host]:port (no MX lookup) or host:port / domain (MX lookup); empty: the recipient's domain, by MX.";
    SERVICE_THROTTLE_TIME "service_throttle_time" Kind::Time { unit: 's' }, "60s",
        "How long a service is left alone after a child failed before serving one request.";
    SHUTDOWN_TIMEOUT "shutdown_timeout" Kind::Time { unit: 's' }, "10s",
        "How long postern stop lets requests in progress finish before it kills what is left (postern's own).";
    SMTP_BIND_ADDRESS "smtp_bind_address" Kind::Text, "",
        "Local IPv4 address the smtp agent connects from; empty: the system's choice.";
    SMTP_BIND_ADDRESS6 "smtp_bind_address6" Kind::Text, "",
        "Local IPv6 address the smtp agent connects from; empty: the system's choice.";
    SMTP_CONNECT_TIMEOUT "smtp_connect_timeout" Kind::Time { unit: 's' }, "30s",
        "Time limit for the smtp agent's TCP connection to a server.";
    SMTP_CONNECTION_CACHE_ON_DEMAND "smtp_connection_cache_on_demand" Kind::Bool, "yes",
        "Whether an smtp process keeps its session open after a delivery, for its next request to the same next hop (postern's cache is per process).";
    SMTP_CONNECTION_CACHE_TIME_LIMIT "smtp_connection_cache_time_limit" Kind::Time { unit: 's' }, "2s",
        "How long an smtp process keeps an unused session open while it waits for its next request.";
    SMTP_CONNECTION_REUSE_COUNT_LIMIT "smtp_connection_reuse_count_limit" Kind::Int { min: 0 }, "0",
        "How many times a session may be reused after its first delivery (0: no limit).";
    SMTP_CONNECTION_REUSE_TIME_LIMIT "smtp_connection_reuse_time_limit" Kind::Time { unit: 's' }, "300s",
        "How long after it was opened a session may still be reused.";
    SMTP_DATA_DONE_TIMEOUT "smtp_data_done_timeout" Kind::Time { unit: 's' }, "600s",
        "Time limit for the server's reply to the end of the message.";
    SMTP_DATA_INIT_TIMEOUT "smtp_data_init_timeout" Kind::Time { unit: 's' }, "120s",
        "Time limit for the server's reply to DATA.";
    SMTP_DATA_XFER_TIMEOUT "smtp_data_xfer_timeout" Kind::Time { unit: 's' }, "180s",
        "Time limit for each write of the message body.";
    SMTP_DEFER_IF_NO_MX_ADDRESS_FOUND "smtp_defer_if_no_mx_address_found" Kind::Bool, "no",
        "Whether mail is deferred, not bounced, when its domain's mail exchangers all lack an address (each lookup's answer final).";
    SMTP_HELO_NAME "smtp_helo_name" Kind::Text, "$myhostname",
        "The name the smtp agent gives in EHLO/HELO.";
    SMTP_HELO_TIMEOUT "smtp_helo_timeout" Kind::Time { unit: 's' }, "300s",
        "Time limit for the server's greeting and its reply to EHLO/HELO.";
    SMTP_MAIL_TIMEOUT "smtp_mail_timeout" Kind::Time { unit: 's' }, "300s",
        "Time limit for the server's reply to MAIL FROM.";
    SMTP_MX_ADDRESS_LIMIT "smtp_mx_address_limit" Kind::Int { min: 0 }, "5",
        "The most server addresses the smtp agent tries per delivery (0: no limit).";
    SMTP_QUIT_TIMEOUT "smtp_quit_timeout" Kind::Time { unit: 's' }, "300s",
        "Time limit for the server's reply to QUIT.";
    SMTP_RCPT_TIMEOUT "smtp_rcpt_timeout" Kind::Time { unit: 's' }, "300s",
        "Time limit for the server's reply to RCPT TO.";
    SMTP_RSET_TIMEOUT "smtp_rset_timeout" Kind::Time { unit: 's' }, "20s",
        "Time limit for the server's reply to RSET, which ends a delivery whose session is kept for the next.";
    SMTP_SASL_AUTH_ENABLE "smtp_sasl_auth_enable" Kind::Bool, "no",
        "Whether the smtp agent authenticates (AUTH PLAIN or LOGIN) where smtp_sasl_password_maps has a password.";
    SMTP_SASL_PASSWORD_MAPS "smtp_sasl_password_maps" Kind::Text, "",
        "Text file of '[host]:port user:password' (or 'host user:password') lines; must be owned by root and not readable by others.";
    SMTP_SASL_SECURITY_OPTIONS "smtp_sasl_security_options" Kind::ChoiceList(SASL_OPTIONS), "noplaintext, noanonymous",
        "SASL restrictions without TLS: noplaintext refuses PLAIN and LOGIN.";
    SMTP_SASL_TLS_SECURITY_OPTIONS "smtp_sasl_tls_security_options" Kind::ChoiceList(SASL_OPTIONS), "noanonymous",
        "SASL restrictions over TLS (Postfix's default is $smtp_sasl_security_options; postern allows PLAIN and LOGIN over TLS).";
    SMTP_STARTTLS_TIMEOUT "smtp_starttls_timeout" Kind::Time { unit: 's' }, "300s",
        "Time limit for the TLS handshake after STARTTLS.";
    SMTP_TLS_CAFILE "smtp_tls_CAfile" Kind::Text, "",
        "PEM file of the certificate authorities the smtp agent trusts; empty (and no smtp_tls_CApath): the system's roots.";
    SMTP_TLS_CAPATH "smtp_tls_CApath" Kind::Text, "",
        "Directory of PEM certificate authority files the smtp agent trusts (every regular file in it).";
    SMTP_TLS_CERT_FILE "smtp_tls_cert_file" Kind::Text, "",
        "PEM client certificate chain the smtp agent presents when asked (with smtp_tls_key_file).";
    SMTP_TLS_KEY_FILE "smtp_tls_key_file" Kind::Text, "$smtp_tls_cert_file",
        "PEM private key of smtp_tls_cert_file.";
    SMTP_TLS_MANDATORY_PROTOCOLS "smtp_tls_mandatory_protocols" Kind::List, "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1",
        "TLS protocols at the encrypt, verify and secure levels (TLSv1.2 and TLSv1.3 are the ones postern speaks).";
    SMTP_TLS_SECURITY_LEVEL "smtp_tls_security_level" Kind::Choice(TLS_LEVELS), "may",
        "TLS of the smtp agent: none, may (opportunistic), encrypt (mandatory, unauthenticated), verify (the server's name must match its certificate), secure (the next hop's name must); Postfix's built-in default is none, its packages' main.cf sets may.";
    STALE_LOCK_TIME "stale_lock_time" Kind::Time { unit: 's' }, "500s",
        "A mailbox dotlock file older than this is removed as stale.";
    STRICT_MAILBOX_OWNERSHIP "strict_mailbox_ownership" Kind::Bool, "yes",
        "Refuse to deliver to a mailbox file that is not owned by the recipient.";
    SUBMIT_CLIENT_CONNECTION_COUNT_LIMIT "submit_client_connection_count_limit" Kind::Int { min: 0 }, "10",
        "The most submissions one uid may have in progress at once; more are refused at once with 4.7.0 (root and mail_owner are exempt; 0: no limit; postern's own, after Postfix's smtpd_client_connection_count_limit).";
    SUBMIT_INPUT_TIMEOUT "submit_input_timeout" Kind::Time { unit: 's' }, "10s",
        "How long submit waits for each read of a submission's input before it gives up on the connection (postern's own).";
    SUBMIT_TIMEOUT "submit_timeout" Kind::Time { unit: 's' }, "60s",
        "How long postern sendmail waits for the submit service to take the message and each part of it; never for the answer after the end of the message (postern's own).";
    SYSLOG_FACILITY "syslog_facility" Kind::Choice(SYSLOG_FACILITIES), "mail",
        "Syslog facility of postern's log lines.";
    SYSLOG_NAME "syslog_name" Kind::Text, "postern",
        "Prefix of every log line: <syslog_name>/<service>[pid].";
    TRANSPORT_MAPS "transport_maps" Kind::List, "",
        "Files mapping addresses to transports (pattern, then local, local:, error:text, smtp:[host]:port, or a pipe service from master.cf).";
}

/// Per-service parameter suffixes: `<service><suffix>` is recognised for every
/// service named in master.cf (Postfix's `<transport>_time_limit` and friends).
pub const SERVICE_SUFFIXES: &[(&str, Kind, &str)] = &[
    (
        "_time_limit",
        Kind::Time { unit: 's' },
        "$command_time_limit",
    ),
    (
        "_destination_concurrency_limit",
        Kind::Int { min: 0 },
        "$default_destination_concurrency_limit",
    ),
    ("_destination_recipient_limit", Kind::Int { min: 0 }, "50"),
];

/// Looks up a declared parameter by name.
pub fn spec(name: &str) -> Option<&'static ParamSpec> {
    PARAMS.iter().find(|p| p.name == name)
}

/// The default of parameter `name` (as main.cf text): a declared one's, or
/// a per-service parameter's (`<service><suffix>`, any service); `None` for
/// a name postern does not know.
pub fn default_of(name: &str) -> Option<&'static str> {
    spec(name)
        .map(|p| p.default)
        .or_else(|| service_param(name, |_| true).map(|(_, d)| d))
}

/// The kind and default of a per-service parameter `<service><suffix>`, if
/// `name` has one of the suffixes and `is_service` accepts the prefix.
pub fn service_param(
    name: &str,
    is_service: impl Fn(&str) -> bool,
) -> Option<(Kind, &'static str)> {
    SERVICE_SUFFIXES.iter().find_map(|(suffix, kind, default)| {
        let service = name.strip_suffix(suffix)?;
        (!service.is_empty() && is_service(service)).then_some((*kind, *default))
    })
}

/// A checked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Text, list or choice.
    Text(String),
    /// A number.
    Int(i64),
    /// yes/no.
    Bool(bool),
    /// A time.
    Time(Duration),
}

/// Checks `value` (already expanded) against `kind`.
pub fn check(kind: Kind, value: &str) -> Result<Value, String> {
    let v = value.trim();
    match kind {
        Kind::Text | Kind::List => Ok(Value::Text(v.to_string())),
        Kind::Int { min } => {
            let n = parse_int(v)?;
            if n < min {
                return Err(format!("'{v}' is too small (the minimum is {min})"));
            }
            Ok(Value::Int(n))
        }
        Kind::Bool => parse_bool(v).map(Value::Bool),
        Kind::Time { unit } => parse_time(v, unit).map(Value::Time),
        Kind::Choice(choices) => {
            if choices.contains(&v) {
                Ok(Value::Text(v.to_string()))
            } else {
                Err(format!("'{v}' is not one of: {}", choices.join(", ")))
            }
        }
        Kind::ChoiceList(choices) => {
            let words = split_list(v);
            if words.is_empty() {
                return Err(format!(
                    "empty value (expected one or more of: {})",
                    choices.join(", ")
                ));
            }
            for w in &words {
                if !choices.contains(&w.as_str()) {
                    return Err(format!("'{w}' is not one of: {}", choices.join(", ")));
                }
            }
            Ok(Value::Text(v.to_string()))
        }
    }
}

/// Parses a whole number.
pub fn parse_int(v: &str) -> Result<i64, String> {
    if v.is_empty() {
        return Err("empty value where a number is expected".into());
    }
    v.parse::<i64>().map_err(|_| {
        if v.bytes().all(|b| b.is_ascii_digit()) {
            format!("'{v}' is too large")
        } else {
            format!("'{v}' is not a number")
        }
    })
}

/// Parses `yes` or `no` (in any case).
pub fn parse_bool(v: &str) -> Result<bool, String> {
    if v.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(format!("'{v}' is not yes or no"))
    }
}

/// Parses a Postfix time value: digits and one optional unit letter
/// (`s`econds, `m`inutes, `h`ours, `d`ays, `w`eeks); a bare number is in
/// `default_unit`.
pub fn parse_time(v: &str, default_unit: char) -> Result<Duration, String> {
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    if digits == 0 {
        return Err(if v.is_empty() {
            "empty value where a time is expected".to_string()
        } else {
            format!("'{v}' is not a time value (a number with an optional unit s, m, h, d or w)")
        });
    }
    let number: u64 = v[..digits]
        .parse()
        .map_err(|_| format!("time value '{v}' is too large"))?;
    let unit_text = &v[digits..];
    let mut unit_chars = unit_text.chars();
    let unit = match (unit_chars.next(), unit_chars.next()) {
        (None, _) => default_unit,
        (Some(u), None) => u,
        _ => {
            return Err(format!(
                "'{v}' has a bad time unit '{unit_text}' (use s, m, h, d or w)"
            ))
        }
    };
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        'w' => 604800,
        other => {
            return Err(format!(
                "'{v}' has a bad time unit '{other}' (use s, m, h, d or w)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .filter(|s| *s <= i32::MAX as u64)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("time value '{v}' is too large"))
}

/// Splits a list value on commas and white space, dropping empty items.
pub fn split_list(v: &str) -> Vec<String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Formats a duration the way postconf prints time defaults (`100s`).
pub fn format_time(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in PARAMS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn defaults_pass_their_own_checks() {
        for p in PARAMS {
            if !p.default.contains('$') {
                check(p.kind, p.default).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            }
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("100s", 's'), Ok(Duration::from_secs(100)));
        assert_eq!(parse_time("100", 's'), Ok(Duration::from_secs(100)));
        assert_eq!(parse_time("5", 'd'), Ok(Duration::from_secs(5 * 86400)));
        assert_eq!(parse_time("2w", 's'), Ok(Duration::from_secs(2 * 604800)));
        assert_eq!(parse_time("3h", 's'), Ok(Duration::from_secs(3 * 3600)));
        assert_eq!(parse_time("1m", 's'), Ok(Duration::from_secs(60)));
        assert!(parse_time("10x", 's')
            .unwrap_err()
            .contains("bad time unit 'x'"));
        assert!(parse_time("10ms", 's')
            .unwrap_err()
            .contains("bad time unit 'ms'"));
        assert!(parse_time("s", 's')
            .unwrap_err()
            .contains("not a time value"));
        assert!(parse_time("", 's').unwrap_err().contains("empty"));
        assert!(parse_time("-1s", 's')
            .unwrap_err()
            .contains("not a time value"));
        assert!(parse_time("99999999999999999999", 's')
            .unwrap_err()
            .contains("too large"));
        assert!(parse_time("999999999w", 's')
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn numbers_bools_choices() {
        assert_eq!(check(Kind::Int { min: 1 }, "10"), Ok(Value::Int(10)));
        assert_eq!(
            check(Kind::Int { min: 1 }, "ten"),
            Err("'ten' is not a number".into())
        );
        assert_eq!(
            check(Kind::Int { min: 1 }, "0"),
            Err("'0' is too small (the minimum is 1)".into())
        );
        assert_eq!(check(Kind::Bool, "YES"), Ok(Value::Bool(true)));
        assert_eq!(check(Kind::Bool, "no"), Ok(Value::Bool(false)));
        assert!(check(Kind::Bool, "maybe").is_err());
        assert!(check(Kind::ChoiceList(INET_PROTOCOL_NAMES), "ipv4, ipv6").is_ok());
        assert!(check(Kind::ChoiceList(INET_PROTOCOL_NAMES), "ipv5").is_err());
        assert_eq!(split_list(" a, b  c,,d "), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn service_params() {
        let is = |s: &str| s == "cat" || s == "127.0.0.1:10025";
        assert!(matches!(
            service_param("cat_time_limit", is),
            Some((Kind::Time { .. }, _))
        ));
        assert!(service_param("127.0.0.1:10025_time_limit", is).is_some());
        assert!(service_param("dog_time_limit", is).is_none());
        assert!(service_param("_time_limit", |_| true).is_none());
    }
}
