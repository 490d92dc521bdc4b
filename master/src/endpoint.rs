//! Listening endpoints: what master.cf asks for, made concrete and opened.
//!
//! An inet service without a host listens on `inet_interfaces` (restricted
//! to `inet_protocols`); with a host, on that host's addresses. A unix
//! service is a socket under `queue_directory/private` (reachable by the mail
//! owner only: the directory is 0700) or `public` (0755, socket 0666). A fifo
//! is a named pipe there, opened read-write so that it never reports
//! end-of-file. Every descriptor is close-on-exec and numbered at or above
//! [`FIRST_FREE_FD`], so handing it to a child at a fixed number never
//! collides (see `postern_common::status`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6, UnixAddr,
};
use nix::sys::stat::Mode;
use postern_common::status::FIRST_FREE_FD;
use postern_conf::{params, Config, Endpoint, ServiceEntry, ServiceType};

/// One concrete thing to listen on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindTarget {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix stream socket path.
    Unix(PathBuf),
    /// A named pipe path.
    Fifo(PathBuf),
    /// A unix datagram socket path (Postfix's `unix-dgram`, postlogd's).
    Dgram(PathBuf),
    /// A unix stream socket path over which descriptors are passed
    /// (Postfix's `pass`, smtpd's behind postscreen).
    Pass(PathBuf),
}

impl std::fmt::Display for BindTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindTarget::Tcp(a) => write!(f, "{a}"),
            BindTarget::Unix(p)
            | BindTarget::Fifo(p)
            | BindTarget::Dgram(p)
            | BindTarget::Pass(p) => {
                write!(f, "{}", p.display())
            }
        }
    }
}

pub use postern_common::instance::endpoint_dir;

/// What `entry` listens on, given the configuration.
pub fn targets(config: &Config, entry: &ServiceEntry) -> Result<Vec<BindTarget>, String> {
    let protocols = config.list(params::INET_PROTOCOLS);
    let v4 = protocols.iter().any(|p| p == "all" || p == "ipv4");
    let v6 = protocols.iter().any(|p| p == "all" || p == "ipv6");
    let wanted = |ip: &IpAddr| if ip.is_ipv4() { v4 } else { v6 };
    match &entry.endpoint {
        Endpoint::Inet {
            host: Some(host),
            port,
        } => {
            let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve host {host}: {e}"))?
                    .map(|a| a.ip())
                    .collect(),
            };
            let mut out: Vec<BindTarget> = Vec::new();
            for ip in addrs.into_iter().filter(wanted) {
                let t = BindTarget::Tcp(SocketAddr::new(ip, *port));
                if !out.contains(&t) {
                    out.push(t);
                }
            }
            if out.is_empty() {
                return Err(format!(
                    "host {host} has no address of the protocols in inet_protocols"
                ));
            }
            Ok(out)
        }
        Endpoint::Inet { host: None, port } => {
            let mut ips = Vec::new();
            for item in config.list(params::INET_INTERFACES) {
                match item.as_str() {
                    "all" => ips.extend([
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    ]),
                    "loopback-only" => ips.extend([
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ]),
                    other => ips.push(
                        other
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse()
                            .map_err(|_| {
                                format!("inet_interfaces: '{other}' is not an IP address")
                            })?,
                    ),
                }
            }
            Ok(ips
                .into_iter()
                .filter(wanted)
                .map(|ip| BindTarget::Tcp(SocketAddr::new(ip, *port)))
                .collect())
        }
        Endpoint::Local { name, private } => {
            let path = endpoint_dir(config, *private).join(name);
            match entry.kind {
                ServiceType::Unix => Ok(vec![BindTarget::Unix(path)]),
                ServiceType::Fifo => Ok(vec![BindTarget::Fifo(path)]),
                ServiceType::UnixDgram => Ok(vec![BindTarget::Dgram(path)]),
                ServiceType::Pass => Ok(vec![BindTarget::Pass(path)]),
                ServiceType::Inet => Err("an inet service has no local endpoint".to_string()),
            }
        }
    }
}

/// Moves `fd` to a number at or above [`FIRST_FREE_FD`], close-on-exec.
fn high(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() >= FIRST_FREE_FD {
        return Ok(fd);
    }
    postern_sys::dup_at_least(fd.as_fd(), FIRST_FREE_FD).map_err(std::io::Error::from)
}

/// Opens one endpoint. `owner` is the (uid, gid) that owns unix endpoints.
pub fn open(target: &BindTarget, backlog: i32, owner: (u32, u32)) -> Result<OwnedFd, String> {
    let fd = match target {
        BindTarget::Tcp(addr) => open_tcp(addr, backlog),
        BindTarget::Unix(path) | BindTarget::Pass(path) => open_unix(path, backlog, owner),
        BindTarget::Fifo(path) => open_fifo(path, owner),
        BindTarget::Dgram(path) => open_dgram(path, owner),
    }
    .map_err(|e| format!("cannot listen on {target}: {e}"))?;
    high(fd).map_err(|e| format!("cannot move descriptor of {target}: {e}"))
}

fn open_tcp(addr: &SocketAddr, backlog: i32) -> std::io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(*a))?,
        SocketAddr::V6(a) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(*a))?
        }
    }
    listen(&fd, Backlog::new(backlog).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

fn open_unix(path: &Path, backlog: i32, owner: (u32, u32)) -> std::io::Result<OwnedFd> {
    let fd = bind_unix(path, SockType::Stream, owner)?;
    listen(&fd, Backlog::new(backlog).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

/// A unix datagram socket (mode 0666, like a unix endpoint): no listen.
fn open_dgram(path: &Path, owner: (u32, u32)) -> std::io::Result<OwnedFd> {
    bind_unix(path, SockType::Datagram, owner)
}

fn bind_unix(path: &Path, kind: SockType, owner: (u32, u32)) -> std::io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        kind,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    // Every path operation below runs with the mail owner's filesystem ids
    // (the directory is the mail owner's): the socket is created owned by
    // the mail owner, mode 0666 by the umask, and nothing is changed by path
    // as root, so a symbolic link swapped in cannot redirect root's rights.
    as_owner(owner, 0o111, || -> std::io::Result<()> {
        // A stale socket from an earlier run is replaced; anything else is not.
        if let Ok(md) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if md.file_type().is_socket() {
                std::fs::remove_file(path)?;
            } else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                ));
            }
        }
        bind(fd.as_raw_fd(), &addr)?;
        Ok(())
    })?;
    Ok(fd)
}

/// Runs `f` with the mail owner's filesystem ids and `umask`.
fn as_owner<T>(
    owner: (u32, u32),
    umask: u32,
    f: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mail_owner = postern_sys::privilege::MailOwner {
        uid: owner.0,
        gid: owner.1,
    };
    postern_sys::privilege::as_filesystem_user(mail_owner, umask, f)
        .map_err(std::io::Error::other)?
}

fn open_fifo(path: &Path, owner: (u32, u32)) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::FileTypeExt;
    let fd = as_owner(owner, 0, || -> std::io::Result<OwnedFd> {
        match std::fs::symlink_metadata(path) {
            Ok(md) if md.file_type().is_fifo() => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a fifo",
                ))
            }
            Err(_) => nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o622))?,
        }
        Ok(postern_sys::openat(
            None,
            path,
            nix::fcntl::OFlag::O_RDWR
                | nix::fcntl::OFlag::O_NONBLOCK
                | nix::fcntl::OFlag::O_CLOEXEC
                | nix::fcntl::OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?)
    })?;
    // Checked and fixed through the descriptor, never by path.
    let md = nix::sys::stat::fstat(fd.as_raw_fd())?;
    let is_fifo = md.st_mode & libc::S_IFMT == libc::S_IFIFO;
    if !is_fifo || md.st_uid != owner.0 {
        return Err(std::io::Error::other(
            "is not a fifo owned by the mail owner",
        ));
    }
    nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(0o622))?;
    Ok(fd)
}

/// Removes the file of a unix or fifo endpoint (when a service goes away).
pub fn remove(target: &BindTarget) {
    if let BindTarget::Unix(p) | BindTarget::Fifo(p) | BindTarget::Dgram(p) | BindTarget::Pass(p) =
        target
    {
        let _ = std::fs::remove_file(p);
    }
}

/// Sends a wakeup to an endpoint, as the master's wakeup timer does: `W`
/// for postern's children; for Postfix's daemons `W` and a NUL byte on a
/// socket, `W` alone on a fifo (`postfix` true).
/// `held` is the master's own descriptor of the endpoint. A fifo is written
/// through it, never opened again by path: the path is in a directory the
/// mail owner controls, and root must not open what may have been put
/// there. A unix socket is connected to without blocking (a full backlog is
/// an error, not a hang of the master) and with the mail owner's
/// file-system rights.
pub fn wake(
    target: &BindTarget,
    held: &OwnedFd,
    owner: (u32, u32),
    postfix: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    let on_socket: &[u8] = if postfix { b"W\0" } else { b"W" };
    match target {
        BindTarget::Tcp(addr) => {
            let mut s =
                std::net::TcpStream::connect_timeout(addr, std::time::Duration::from_secs(1))?;
            s.write_all(on_socket)
        }
        // With the mail owner's rights: the socket is in its directory.
        BindTarget::Unix(p) => as_owner(owner, 0, || {
            postern_common::server::trigger_unix(p, on_socket)
        }),
        BindTarget::Dgram(_) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "a unix-dgram service takes no wakeup",
        )),
        // `postern check` refuses a wakeup on a pass service.
        BindTarget::Pass(_) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "a pass service takes no wakeup from postern's master",
        )),
        BindTarget::Fifo(_) => {
            nix::unistd::write(held, b"W")?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wakeup of a fifo goes through the master's own descriptor: a
    /// link put in the fifo's place (its directory belongs to the mail
    /// owner) leads nowhere.
    #[test]
    fn a_fifo_is_woken_through_the_held_descriptor_not_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("qmgr");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622)).unwrap();
        let held = postern_sys::openat(
            None,
            &fifo,
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        std::fs::rename(&link, &fifo).unwrap();
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        wake(&BindTarget::Fifo(fifo), &held, me, false).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
        let mut buf = [0u8; 8];
        assert_eq!(nix::unistd::read(held.as_raw_fd(), &mut buf).unwrap(), 1);
        assert_eq!(&buf[..1], b"W");
    }

    /// A unix endpoint whose backlog is full is an error at once, not a
    /// master blocked in connect.
    #[test]
    fn a_unix_endpoint_with_a_full_backlog_does_not_block_the_wakeup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let held: OwnedFd = listener.into();
        nix::sys::socket::listen(&held, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        // Fill the backlog (nobody accepts), then wake until it refuses;
        // in a thread, so that a wakeup that blocks fails the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let refused =
                (0..64).any(|_| wake(&BindTarget::Unix(path.clone()), &held, me, false).is_err());
            let _ = tx.send(refused);
        });
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a wakeup blocked");
        assert!(refused, "the backlog never filled");
    }
}
