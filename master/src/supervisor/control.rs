//! The control socket: accepting root's connections without waiting for
//! them, moving each on from the event loop, answering its request.

use std::time::Instant;

use mio::{Interest, Token};
use postern_common::control::{self as control_client, Request};

use super::Master;
use crate::control_server::{self, Client};

impl Master {
    /// Accepts control connections (never waiting for one to speak): each
    /// is checked for root, made non-blocking and registered on the loop.
    pub(super) fn on_control(&mut self) {
        loop {
            let Some(listener) = &self.control else {
                return;
            };
            let (stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control socket accept: {e}");
                    return;
                }
            };
            let peer =
                nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials);
            let pid = match peer {
                Ok(c) if c.uid() == 0 => c.pid(),
                Ok(c) => {
                    log::warn!(
                        "control socket: refused a request from uid {} pid {}: root only",
                        c.uid(),
                        c.pid()
                    );
                    continue;
                }
                Err(e) => {
                    log::warn!("control socket: cannot get peer credentials: {e}");
                    continue;
                }
            };
            if self.control_clients.len() >= control_server::MAX_CLIENTS {
                log::warn!(
                    "control socket: {} connections already open: closed a new one from pid {pid}",
                    control_server::MAX_CLIENTS
                );
                continue;
            }
            let token = self.token();
            let mut client = Client::new(stream, Instant::now());
            client.peer_pid = Some(pid);
            if let Err(e) = self.poll.registry().register(
                client.stream(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("control socket: cannot watch a connection: {e}");
                continue;
            }
            self.control_clients.insert(token, client);
        }
    }

    /// Moves one control connection on as far as it goes without waiting.
    pub(super) fn on_control_client(&mut self, token: Token) {
        let Some(mut client) = self.control_clients.remove(&token) else {
            return;
        };
        let done = client.progress(|request| control_client::reply(request, |r| self.answer(r)));
        if done {
            let _ = self.poll.registry().deregister(client.stream());
        } else {
            self.control_clients.insert(token, client);
        }
    }

    /// Answers one control request.
    pub(super) fn answer(&mut self, request: &Request) -> String {
        match request {
            Request::Status => self.status_text(),
            Request::StatusJson => {
                let mut text = serde_json::to_string(&self.snapshot())
                    .unwrap_or_else(|e| format!("error: cannot encode the status: {e}"));
                text.push('\n');
                text
            }
            Request::Reload(service) => {
                let verdict = match service {
                    None => self.reload(),
                    Some(name) => self.recycle(name),
                };
                self.notify_status();
                match verdict {
                    Ok(text) => format!("ok: {text}\n"),
                    Err(why) => format!("error: {why}\n"),
                }
            }
        }
    }
}
