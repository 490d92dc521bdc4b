//! # postern-queue
//!
//! **Name**: postern-submit, postern-qmgr, postern-showq, postern-sendmail
//! (also called as `mailq` and `newaliases`), postern-queue — postern's
//! mail queue.
//!
//! **Synopsis**: `postern-submit` and `postern-qmgr` are started by
//! postern-master (master.cf: `submit unix n - n - - submit`, `qmgr fifo n -
//! n 300 1 qmgr`, `showq unix n - n - - showq`); `postern sendmail
//! [options] recipient... < message`, `sendmail -bs`, `mailq`, `newaliases`;
//! `postern queue list | show | delete | hold | release | flush`.
//!
//! **Description**: submit takes a message from `postern sendmail` over the
//! public `submit` socket, learns who sent it from the socket's peer
//! credentials, stores it durably in `incoming` (see [`queuefile`]) and only
//! then answers with its queue id. qmgr moves it to `active`, routes each
//! recipient (transport_maps, aliases, `.forward`, passwd — [`route`]),
//! hands the deliveries to the local service (or a transport: smtp, pipe)
//! with the message file attached, records every outcome in the queue file, retries deferred
//! messages with growing intervals and sends delivery status notifications
//! ([`bounce`]). showq ([`showq`]) lists the queue for `mailq` to the users
//! `authorized_mailq_users` allows; `sendmail -bs` ([`smtp_session`]) speaks
//! SMTP on standard input/output. [`admin`] is the administrator's tool.
//!
//! **Security**: submit, qmgr and showq run as the mail owner (master.cf unpriv
//! `-`), never as root; the queue directories are the mail owner's, mode
//! 0700. No set-gid program is needed: submission goes over a socket and
//! the submitting uid comes from the kernel (as does the uid showq checks
//! against `authorized_mailq_users`). Untrusted input: an SMTP session of
//! `sendmail -bs` (bounded lines, `message_size_limit`, an error limit), the submit
//! request and message (checked, size-limited, each read bounded by
//! `submit_input_timeout`, at most `submit_client_connection_count_limit`
//! at once per uid; nothing is queued without its end-of-message chunk), queue files (a bad one goes
//! to `corrupt`), aliases, `.forward` and transport files (problems logged
//! with `file:line`; an unsafe `.forward` is not used). local verifies every
//! instruction qmgr gives it against its own destination policy.
//!
//! **Configuration** (main.cf; defaults in brackets): `message_size_limit`
//! [10240000], `myhostname` [the host name, fully qualified with
//! `.$mydomain` or `.localdomain` when bare], `mydomain` [$myhostname minus
//! its first label], `mydestination` [$myhostname, localhost.$mydomain,
//! localhost], `myorigin` [$myhostname], `authorized_mailq_users` [static:anyone], `alias_maps` [hash:/etc/aliases], `recipient_delimiter` [],
//! `home_mailbox` [], `mail_spool_directory` [/var/mail], `transport_maps`
//! [], `default_transport` [error:...], `relayhost` [],
//! `<service>_destination_concurrency_limit`
//! [$default_destination_concurrency_limit],
//! `<service>_destination_recipient_limit` [50], `minimal_backoff_time` [300s],
//! `maximal_backoff_time` [4000s], `queue_run_delay` [300s],
//! `maximal_queue_lifetime` [5d], `initial_destination_concurrency` [5],
//! `default_destination_concurrency_limit` [20],
//! `local_destination_concurrency_limit` [2], `local_delivery_batch_limit`
//! [32], `qmgr_message_active_limit`
//! [20000], `bounce_notice_recipient` [postmaster], `submit_timeout` [60s],
//! `submit_input_timeout` [10s], `submit_client_connection_count_limit`
//! [10], `duplicate_filter_limit` [1000].
//!
//! **Exit status**: the daemons as every postern child (0, 64 usage, 75
//! temporary, 78 configuration); sendmail and queue as documented in
//! [`sendmail`] and [`admin`].
//!
//! **See also**: Postfix sendmail(1), postqueue(1), postsuper(1), qmgr(8),
//! bounce(8); `postern_common::handoff`.

pub mod admin;
pub mod bounce;
pub mod headers;
pub mod qmgr;
pub mod queuefile;
pub mod route;
pub mod sendmail;
pub mod showq;
pub mod smtp_session;
pub mod submit;
