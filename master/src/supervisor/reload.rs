//! Reload: reading the configuration again and moving the running services
//! to it, keeping what did not change and every endpoint still wanted (the
//! plan is the pure function [`plan`]); `reload SERVICE` recycles one.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Instant;

use postern_conf::{params, Config, ServiceEntry, ServicesFile};

use super::services::{startable, Service};
use super::{notify, refuse_untrusted, Master};
use crate::endpoint::{self, BindTarget};

impl Master {
    /// Reloads the configuration; returns the verdict (`Err` when the
    /// running configuration stays in force), which `postern reload` prints.
    pub(super) fn reload(&mut self) -> Result<String, String> {
        if self.stop.is_some() {
            return Err("the master is stopping".into());
        }
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        notify(&reloading);
        let verdict = self.reload_inner();
        let status = match &verdict {
            Ok(_) => self.status_line(),
            Err(why) => format!("reload refused, running configuration kept: {why}"),
        };
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
        self.notified_status = status;
        verdict
    }

    /// The reload itself; `Err` when the running configuration was kept.
    pub(super) fn reload_inner(&mut self) -> Result<String, String> {
        log::info!("reload: reading the configuration again");
        let loaded = Config::load(&self.source, &ServicesFile::system());
        for d in &loaded.diagnostics {
            if d.is_error() {
                log::error!("reload: {d}");
            } else {
                log::warn!("reload: {d}");
            }
        }
        let Some(config) = loaded.config else {
            log::error!("reload failed: the configuration has errors; the running configuration stays in force");
            let first = loaded
                .diagnostics
                .iter()
                .find(|d| d.is_error())
                .map_or_else(String::new, |d| format!(": {d}"));
            return Err(format!("the configuration has errors{first}"));
        };
        if let Err(why) = refuse_untrusted(&config, "reload refused") {
            log::error!("{why}; the running configuration stays in force");
            return Err(why);
        }
        // Every service's endpoints under the new configuration; a service
        // whose endpoints cannot be worked out (a host name that does not
        // resolve now) fails the reload as a whole, rather than disappear.
        let mut wanted: Vec<(ServiceEntry, Vec<BindTarget>)> = Vec::new();
        let mut failed = Vec::new();
        for e in startable(&config) {
            let targets = config
                .for_service(e)
                .map_err(|err| err.to_string())
                .and_then(|view| endpoint::targets(&view, e));
            match targets {
                Ok(t) => wanted.push((e.clone(), t)),
                Err(err) => {
                    log::error!("reload: service {}: {err}", e.id());
                    failed.push(format!("service {}: {err}", e.id()));
                }
            }
        }
        if !failed.is_empty() {
            log::error!("reload failed: the running configuration stays in force");
            return Err(failed.join("; "));
        }
        // Keep every open endpoint that the new configuration still wants
        // (each one: a service that loses one of its addresses keeps the
        // others open, so they need no new bind while old children hold them).
        let wanted_targets: Vec<&BindTarget> = wanted.iter().flat_map(|(_, t)| t.iter()).collect();
        // A service whose master.cf entry and endpoints are the same, under
        // the same main.cf settings, is kept as it runs: only what changed
        // is recycled.
        let main_unchanged = same_main(&self.config.main, &config.main);
        let running: Vec<(&ServiceEntry, &[BindTarget])> = self
            .services
            .iter()
            .map(|s| (&s.entry, s.targets.as_slice()))
            .collect();
        let plan = plan(&running, &wanted, main_unchanged);
        let old = std::mem::take(&mut self.services);
        let mut kept: HashMap<BindTarget, OwnedFd> = HashMap::new();
        let mut unchanged: Vec<Option<Service>> = Vec::with_capacity(old.len());
        for (svc, keep) in old.into_iter().zip(&plan.keep) {
            if *keep {
                unchanged.push(Some(svc));
                continue;
            }
            unchanged.push(None);
            for (t, fd) in self.retire(svc, |t| wanted_targets.contains(&t)) {
                kept.insert(t, fd);
            }
        }
        let mut not_started = Vec::new();
        let mut recycled = 0;
        for ((entry, _), continues) in wanted.iter().zip(&plan.continues) {
            if let Some(mut svc) = continues.and_then(|i| unchanged[i].take()) {
                svc.entry = entry.clone();
                self.services.push(svc);
                continue;
            }
            recycled += 1;
            match self.build_service(&config, entry, &mut kept) {
                Ok(svc) => self.services.push(svc),
                Err((_, e)) => {
                    log::error!("reload: {e}; service not started");
                    not_started.push(e);
                }
            }
        }
        for (t, fd) in kept {
            drop(fd);
            endpoint::remove(&t);
        }
        self.config = config;
        // The master's own log lines follow the new syslog_name,
        // maillog_file and syslog_facility from here on (its children read
        // them when they start).
        match postern_common::log::open_sink(
            self.foreground,
            self.config.text(params::MAILLOG_FILE),
            self.config.text(params::SYSLOG_FACILITY),
        ) {
            Ok(s) => {
                postern_common::log::init(self.config.text(params::SYSLOG_NAME), "master", s);
            }
            Err(e) => log::warn!(
                "reload: cannot open maillog_file {}: {e}; logging where it did",
                self.config.text(params::MAILLOG_FILE)
            ),
        }
        let now = Instant::now();
        for i in 0..self.services.len() {
            self.refresh(i, now);
        }
        log::info!(
            "reload: done, {} service(s), {recycled} new or recycled",
            self.services.len()
        );
        if not_started.is_empty() {
            Ok(format!(
                "reloaded: {} service(s), {recycled} new or recycled",
                self.services.len()
            ))
        } else {
            Err(format!(
                "reloaded, but not started: {}",
                not_started.join("; ")
            ))
        }
    }

    /// `postern reload SERVICE`: new children for one service (by name or
    /// `name/type`) under the running configuration; its endpoints stay open.
    pub(super) fn recycle(&mut self, name: &str) -> Result<String, String> {
        if self.stop.is_some() {
            return Err("the master is stopping".into());
        }
        let Some(i) = self
            .services
            .iter()
            .position(|s| s.entry.name == name || s.id() == name)
        else {
            return Err(format!("no running service {name}"));
        };
        let svc = self.services.remove(i);
        let entry = svc.entry.clone();
        let mut kept: HashMap<BindTarget, OwnedFd> =
            self.retire(svc, |_| true).into_iter().collect();
        let config = self.config.clone();
        let result = self.build_service(&config, &entry, &mut kept);
        for (t, fd) in kept {
            drop(fd);
            endpoint::remove(&t);
        }
        match result {
            Ok(svc) => {
                self.services.insert(i, svc);
                self.refresh(i, Instant::now());
                log::info!("reload: service {} recycled", entry.id());
                Ok(format!("recycled service {}", entry.id()))
            }
            Err((_, e)) => {
                log::error!("reload: {e}; service not started");
                Err(e)
            }
        }
    }
}

/// What a reload does with the running services and the wanted ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// For each running service, in order: whether it is kept as it runs
    /// (its children and status channel untouched); the others are retired.
    pub(super) keep: Vec<bool>,
    /// For each wanted service, in order: the running service it continues,
    /// or `None` when it is built anew (new, changed or recycled).
    pub(super) continues: Vec<Option<usize>>,
}

/// The reload plan: a running service whose master.cf entry (lines may
/// have moved) and endpoints are the same as a wanted one's, under the
/// same main.cf settings (`main_unchanged`), is kept; every other service
/// is retired, and every wanted one not continued is built.
pub(super) fn plan(
    running: &[(&ServiceEntry, &[BindTarget])],
    wanted: &[(ServiceEntry, Vec<BindTarget>)],
    main_unchanged: bool,
) -> Plan {
    let keep: Vec<bool> = running
        .iter()
        .map(|(entry, targets)| {
            main_unchanged
                && wanted
                    .iter()
                    .any(|(e, t)| same_entry(e, entry) && t.as_slice() == *targets)
        })
        .collect();
    let mut taken = vec![false; running.len()];
    let continues = wanted
        .iter()
        .map(|(entry, _)| {
            let i = (0..running.len())
                .find(|&i| keep[i] && !taken[i] && same_entry(running[i].0, entry))?;
            taken[i] = true;
            Some(i)
        })
        .collect();
    Plan { keep, continues }
}

/// Whether two main.cf files set the same values (lines may have moved).
pub(super) fn same_main(a: &postern_conf::MainCf, b: &postern_conf::MainCf) -> bool {
    let pairs = |m: &postern_conf::MainCf| -> Vec<(String, String)> {
        m.entries
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    };
    pairs(a) == pairs(b)
}

/// Whether two master.cf entries say the same (lines may have moved).
pub(super) fn same_entry(a: &ServiceEntry, b: &ServiceEntry) -> bool {
    let mut b = b.clone();
    b.line = a.line;
    *a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_conf::mastercf::parse_master_cf;

    fn entries(text: &str) -> Vec<ServiceEntry> {
        let mut d = Vec::new();
        let ports = ServicesFile::parse("smtp 25/tcp\n");
        let cf = parse_master_cf("master.cf", text.as_bytes(), &ports, &mut d);
        assert!(d.is_empty(), "{d:?}");
        cf.services
    }

    fn unix(name: &str) -> Vec<BindTarget> {
        vec![BindTarget::Unix(format!("/q/private/{name}").into())]
    }

    fn with_targets(list: &[ServiceEntry]) -> Vec<(ServiceEntry, Vec<BindTarget>)> {
        list.iter().map(|e| (e.clone(), unix(&e.name))).collect()
    }

    fn running(list: &[(ServiceEntry, Vec<BindTarget>)]) -> Vec<(&ServiceEntry, &[BindTarget])> {
        list.iter().map(|(e, t)| (e, t.as_slice())).collect()
    }

    const OLD: &str = "a unix - n n - - spawn user=nobody argv=/bin/cat\n\
                       b unix - n n - - spawn user=nobody argv=/bin/cat\n";

    #[test]
    fn an_unchanged_configuration_keeps_every_service() {
        let old = with_targets(&entries(OLD));
        let p = plan(&running(&old), &old, true);
        assert_eq!(p.keep, vec![true, true]);
        assert_eq!(p.continues, vec![Some(0), Some(1)]);
    }

    #[test]
    fn moved_lines_are_the_same_service() {
        let old = with_targets(&entries(OLD));
        let new = with_targets(&entries(
            "# a comment moves every line\n\
             b unix - n n - - spawn user=nobody argv=/bin/cat\n\
             a unix - n n - - spawn user=nobody argv=/bin/cat\n",
        ));
        let p = plan(&running(&old), &new, true);
        assert_eq!(p.keep, vec![true, true]);
        assert_eq!(p.continues, vec![Some(1), Some(0)]);
    }

    #[test]
    fn only_the_changed_added_and_removed_services_move() {
        let old = with_targets(&entries(OLD));
        let new = with_targets(&entries(
            "a unix - n n - 3 spawn user=nobody argv=/bin/cat\n\
             b unix - n n - - spawn user=nobody argv=/bin/cat\n\
             c unix - n n - - spawn user=nobody argv=/bin/cat\n",
        ));
        let p = plan(&running(&old), &new, true);
        assert_eq!(p.keep, vec![false, true]);
        assert_eq!(p.continues, vec![None, Some(1), None]);
        // b removed: retired, nothing continues it.
        let only_a = with_targets(&entries(&OLD[..OLD.find('\n').unwrap() + 1]));
        let p = plan(&running(&old), &only_a, true);
        assert_eq!(p.keep, vec![true, false]);
        assert_eq!(p.continues, vec![Some(0)]);
    }

    #[test]
    fn new_endpoints_or_a_changed_main_cf_recycle() {
        let old = with_targets(&entries(OLD));
        let mut moved = old.clone();
        moved[0].1 = unix("elsewhere");
        let p = plan(&running(&old), &moved, true);
        assert_eq!(p.keep, vec![false, true]);
        assert_eq!(p.continues, vec![None, Some(1)]);
        let p = plan(&running(&old), &old, false);
        assert_eq!(p.keep, vec![false, false]);
        assert_eq!(p.continues, vec![None, None]);
    }
}
