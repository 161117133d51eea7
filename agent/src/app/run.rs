//! `wsguard run`: attach (or resume) the probe, serve the API, build a snapshot every interval.
//! A clean stop (SIGTERM, SIGINT) detaches the probe, so a stopped agent costs the host nothing;
//! `keep_on_stop`, `--keep-probe` or SIGUSR2 (the package's upgrade path) leave it counting
//! for the next start to resume.

use std::{
    sync::{atomic::AtomicU64, Arc},
    time::SystemTime,
};

use anyhow::Context;
use aya::maps::RingBuf;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};
use wsguard_common::names;

use crate::{
    alert::{service::AlertService, Alert, Status, Transition, TransitionKind},
    api,
    api::token,
    app::config::Config,
    history::History,
    probe,
    probe::events,
    remediate::Remediator,
    track::Tracker,
    util::caps,
};

/// How long a stopping agent keeps delivering notifications.
const NOTIFY_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Exit status of a start refused for a reason restarting cannot fix (no capabilities to load
/// the probe, another PID namespace): sysexits' `EX_CONFIG`. The systemd unit names it in
/// `RestartPreventExitStatus=`, so a refused start is not retried every `RestartSec` forever.
pub const EXIT_REFUSED: u8 = 78;

/// A start refused before anything was attached, for a reason only the operator can fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

/// How `run` starts, from its command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Start {
    /// Discard a pinned probe and attach a new one.
    pub fresh: bool,
    /// Keep the probe attached on a clean stop (as `[probe] keep_on_stop`).
    pub keep_probe: bool,
}

/// `config_path` is re-read on SIGHUP (None: the default path), see `reload.rs`.
pub async fn run(
    mut cfg: Config,
    config_path: Option<&std::path::Path>,
    start: Start,
    logs: crate::app::reload::Logs,
) -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !caps::can_load_probe(caps::parse_cap_eff(&status).unwrap_or(0)) {
        return Err(Refused(
            "wsguard run needs root, or CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN to mount tracefs/bpffs); `wsguard doctor` checks"
                .into(),
        )
        .into());
    }
    // The probe's pids are the host's: in another PID namespace every watched process would look
    // exited and its connections be reaped (util/pidns.rs). Refused before anything is made.
    if let Some(problem) = crate::util::pidns::PidView::read().problem() {
        let why = format!("wsguard run must run in the host's PID namespace: {problem}; {}", crate::util::pidns::FIX);
        return Err(Refused(why).into());
    }
    // Everything under state_dir is root's alone (0700/0600) whatever the umask (util/state_dir.rs).
    let shared_socket = cfg.api.socket_group.is_some()
        && cfg.api_socket().and_then(|p| p.parent().map(|d| d == cfg.agent.state_dir)).unwrap_or(false);
    for f in crate::util::state_dir::prepare(&cfg.agent.state_dir, shared_socket)? {
        warn!("state_dir was open to group or others: {f}");
    }

    // The secret behind shown client-key hashes (keyhash.rs): an unusable one fails the start
    // before anything is attached, rather than showing hashes anyone can reverse.
    let key_hasher = if cfg.probe.client_key.enabled() {
        crate::track::keyhash::load_or_create(&crate::track::keyhash::path(&cfg.agent.state_dir)).context("[probe.client_key]")?
    } else {
        crate::track::keyhash::KeyHasher::ephemeral()?
    };

    // Bind first: a port conflict should fail before anything is attached.
    let listener = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([api] listen)", cfg.api.listen))?;
    // The socket too (and while we may still chown it); its file is removed when we stop.
    let socket = match cfg.api_socket() {
        Some(path) => match crate::api::socket::bind(&path, cfg.api.socket_group.as_deref()) {
            Ok(s) => Some(s),
            Err(e) if crate::api::socket::storage_failure(&e) => {
                error!("API socket unavailable until a restart (the TCP API serves): {e:#}");
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };

    // TLS files load before the probe attaches: a bad certificate fails the start cleanly.
    let tls = match cfg.api.tls() {
        Some(files) => Some((files.clone(), crate::api::web::server_config(&files)?)),
        None => None,
    };

    let mut probe = at_low_priority(|| probe::start(&cfg.probe, start.fresh))?;
    let received = Arc::new(AtomicU64::new(0));
    let ring = RingBuf::try_from(probe.ebpf.take_map(names::EVENTS).context("map WSG_EVENTS missing")?)?;
    tokio::spawn(events::consume(ring, received.clone()));

    let (history, err) = History::open(cfg.history.clone(), &cfg.agent.state_dir);
    if let Some(e) = err {
        warn!("history store unavailable, keeping history in memory: {e:#}");
    }
    let history = Arc::new(history);
    let alerts = Arc::new(AlertService::open(cfg.alert.clone(), cfg.limits.per_client_connections, &cfg.agent.state_dir));
    // Notifications: a broken [notify] (e.g. a missing secret file) stops the start, because
    // an agent that runs without delivering its alerts fails silently.
    let notifier = if cfg.notify.channels.is_empty() {
        info!("no [[notify.channels]] configured: alerts are not notified");
        None
    } else {
        let n = crate::notify::Notifier::open(cfg.notify.clone(), &cfg.agent.state_dir).context("notifications ([notify])")?;
        alerts.add_sink(n.clone());
        tokio::spawn(n.clone().run());
        Some(n)
    };
    let mut shared = api::Shared::new(history.clone(), cfg.metrics.clone());
    shared.alerts = Some(alerts.clone());
    shared.socket_uids = cfg.api.socket_uids.clone();
    shared.health = cfg.health.clone();
    shared.token = token::load_or_create(&cfg.token_file()).map_err(|e| {
        warn!("API mutations disabled: {e:#}");
        format!("{e:#}")
    });
    // Everything privileged is done: keep only what later work needs (docs/security.md).
    let dropped = crate::app::privs::drop_after_attach(&cfg.remediation.capabilities(), || {
        probe::maps::Reader::default().read(&probe.ebpf, cfg.probe.max_connections).map(drop)
    })?;
    info!("{dropped}");
    let mut remediator = match Remediator::open(cfg.remediation.clone(), &cfg.agent.state_dir) {
        Ok(mut r) => {
            r.set_rules(&cfg.alert.effective_rules(cfg.limits.per_client_connections));
            shared.remediation = Some(r.shared());
            Some(r)
        }
        Err(e) => {
            error!("remediation disabled: cannot open its audit log: {e:#}");
            None
        }
    };
    let shared = Arc::new(shared);
    let app = api::router(shared.clone());
    let api = &cfg.api;
    info!(
        "API listening on {}://{}{}{}",
        if tls.is_some() { "https" } else { "http" },
        api.listen,
        if api.tls_client_ca_file.is_some() { " (client certificates required)" } else { "" },
        if api.basic_auth_users.is_empty() { "" } else { " (basic auth)" },
    );
    let authenticated = api.tls_client_ca_file.is_some() || !api.basic_auth_users.is_empty();
    if !crate::api::web::loopback(&api.listen) && !authenticated {
        warn!(
            "the API on {} is not on loopback and its reads need no credentials: anyone who can reach it reads every \
             process's connections and peers; set [api.basic_auth_users] (and tls_cert_file/tls_key_file) or restrict \
             it with a firewall or network policy (docs/security.md)",
            api.listen
        );
    }
    let _socket_file = socket.map(|(unix, file)| {
        // Connect info = the peer's credentials (api_socket::Peer), read by `api::authorize`.
        let svc = app.clone().into_make_service_with_connect_info::<crate::api::socket::Peer>();
        info!(
            "API also on unix:{} (mode {}; mutations: root{})",
            file.path().display(),
            if cfg.api.socket_group.is_some() { "0660" } else { "0600" },
            if cfg.api.socket_uids.is_empty() { String::new() } else { format!(" and uids {:?}", cfg.api.socket_uids) }
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(unix, svc).await {
                error!("API socket server stopped: {e}");
            }
        });
        file
    });
    let app = crate::api::web::protect(app, cfg.api.basic_auth_users.clone(), shared.clone());
    tokio::spawn(crate::api::web::serve(listener, tls, app));

    let mut tracker = Tracker::new(&cfg.track(), probe.preexisting.take(), key_hasher);
    let mut predictor = cfg.predict.enabled.then(|| crate::predict::Predictor::new(cfg.predict.clone()));
    let mut tick = tokio::time::interval(cfg.agent.interval);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut keep_requested = false;
    loop {
        tokio::select! {
            // First: a SIGUSR2 arriving with a SIGTERM (`systemctl kill -s USR2` then `stop`)
            // still keeps the probe.
            biased;
            _ = usr2.recv() => { keep_requested = true; break }
            _ = tick.tick() => {
                let n = received.load(std::sync::atomic::Ordering::Relaxed);
                match tracker.snapshot(&mut probe, n) {
                    Ok(built) => {
                        let snap = Arc::new(built.snapshot);
                        if let Err(e) = history.append(snap.clone()) {
                            warn!("history: {e:#}");
                        }
                        let pred = predictor.as_mut().map(|p| p.observe(&snap));
                        let now = SystemTime::now();
                        let events = alerts.evaluate(&snap, pred.as_ref(), now);
                        for (t, a) in &events {
                            log_transition(t, a);
                        }
                        if let Some(r) = remediator.as_mut() {
                            let firing: Vec<Alert> = alerts.alerts().into_iter().filter(|a| a.status == Status::Firing).collect();
                            r.handle(&events, &firing, &snap, &built.connections, now);
                        }
                        if let Some(pred) = pred {
                            shared.publish_predictions(pred);
                        }
                        shared.publish(snap, built.connections);
                    }
                    Err(e) => error!("snapshot failed: {e:#}"),
                }
            }
            _ = hup.recv() => {
                let live = crate::app::reload::Live { tracker: &mut tracker, predictor: &mut predictor, tick: &mut tick, logs: &logs, alerts: &alerts };
                crate::app::reload::on_sighup(config_path, &mut cfg, live);
                // Reloaded rules: the breaker must know which way each alert's metric improves.
                // ([remediation] itself changes on restart.)
                if let Some(r) = remediator.as_mut() {
                    r.set_rules(&cfg.alert.effective_rules(cfg.limits.per_client_connections));
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Stopping (SIGTERM/SIGINT). Snapshots and alert changes were committed as they happened;
    // what is left is what lives in pacing or memory: notices (within NOTIFY_FLUSH; the rest
    // stays in the outbox for the next start), a last alert-state save, and WAL checkpoints.
    if let Some(n) = &notifier {
        n.flush(NOTIFY_FLUSH).await;
    }
    alerts.sync();
    if let Err(e) = history.checkpoint() {
        warn!("history: {e:#}");
    }
    let why = if keep_requested {
        Some("SIGUSR2")
    } else if start.keep_probe {
        Some("--keep-probe")
    } else if cfg.probe.keep_on_stop {
        Some("[probe] keep_on_stop = true")
    } else {
        None
    };
    stop_probe(probe, why)
}

/// Run `f` (the probe's start: seconds of the kernel's verifier, see docs/architecture.md,
/// "Start-up") on this thread at nice 19, then put the thread's priority back. On a busy host
/// the served application then gets the CPU first: a Node `ws` echo at 20k msg/s over 1000
/// connections, with an agent (socket mode) started inside its 12 s window, had a p99 of
/// 58/134/60 ms, and 18/38/21 ms with this (alternating rounds, 2-core host, load ~2; off:
/// 3-6 ms). Only this thread is lowered; a failure to lower or restore is logged and the start
/// goes on.
fn at_low_priority<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain syscalls on this thread's own id; getpriority's -1 is told apart by errno.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    let old = unsafe {
        *libc::__errno_location() = 0;
        let p = libc::getpriority(libc::PRIO_PROCESS, tid);
        (*libc::__errno_location() == 0).then_some(p)
    };
    let lowered = old.is_some() && unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) } == 0;
    let out = f();
    if let (true, Some(old)) = (lowered, old) {
        // SAFETY: as above; raising back needs CAP_SYS_NICE, which root has until privs drop them.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, old) } != 0 {
            warn!("cannot restore this thread's CPU priority after the probe's start: {}", std::io::Error::last_os_error());
        }
    }
    out
}

/// Detach the probe, or say why it stays.
fn stop_probe(probe: probe::Probe, keep: Option<&str>) -> anyhow::Result<()> {
    let pin = probe.pin_path.clone();
    if let Some(why) = keep {
        info!(
            "stopping; the probe stays attached and counting at {} ({why}): the next `wsguard run` resumes it, \
             `wsguard detach --pin {}` removes it",
            pin.display(),
            pin.display()
        );
        return Ok(());
    }
    // Our descriptors to programs and maps close with the process; the pins are what keep the
    // probe attached, and they go now.
    drop(probe);
    let done = probe::remove(&pin).with_context(|| format!("stopping: cannot detach the probe at {}", pin.display()))?;
    info!(
        "stopping; probe detached from {} ({done}); set [probe] keep_on_stop = true to keep counting across restarts",
        pin.display()
    );
    Ok(())
}

/// One log line per alert change (the `log` notification channel adds structured JSON).
fn log_transition(t: &Transition, a: &Alert) {
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let what = format!("{:?}", t.kind).to_lowercase();
    match t.kind {
        TransitionKind::Firing | TransitionKind::Escalated | TransitionKind::SeverityChanged => {
            warn!(fingerprint = %t.fingerprint, severity = t.severity.as_str(), "alert {what}: {} {{{}}}", t.alertname, labels.join(","))
        }
        _ => {
            info!(fingerprint = %t.fingerprint, severity = t.severity.as_str(), "alert {what}: {} {{{}}}", t.alertname, labels.join(","))
        }
    }
}
