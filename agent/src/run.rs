//! `wsguard run`: attach (or resume) the probe, serve the API, build a snapshot every interval.

use std::sync::{atomic::AtomicU64, Arc};

use anyhow::{bail, Context};
use aya::maps::RingBuf;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};
use wsguard_common::names;

use crate::{api, config::Config, events, history::History, probe, track::Tracker};

/// `config_path` is re-read on SIGHUP (None: the default path), see `reload.rs`.
pub async fn run(mut cfg: Config, config_path: Option<&std::path::Path>, fresh: bool, logs: crate::reload::Logs) -> anyhow::Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = crate::doctor::parse_cap_eff(&status).unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        bail!("wsguard run needs root, or CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN to mount tracefs/bpffs); `wsguard doctor` checks");
    }
    std::fs::create_dir_all(&cfg.agent.state_dir)
        .with_context(|| format!("cannot create state_dir {}", cfg.agent.state_dir.display()))?;

    // Bind first: a port conflict should fail before anything is attached.
    let listener = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([api] listen)", cfg.api.listen))?;

    let mut probe = probe::start(&cfg.probe, fresh)?;
    let received = Arc::new(AtomicU64::new(0));
    let ring = RingBuf::try_from(probe.ebpf.take_map(names::EVENTS).context("map WSG_EVENTS missing")?)?;
    tokio::spawn(events::consume(ring, received.clone()));

    let (history, err) = History::open(cfg.history.clone(), &cfg.agent.state_dir);
    if let Some(e) = err {
        warn!("history store unavailable, keeping history in memory: {e:#}");
    }
    let history = Arc::new(history);
    let shared = Arc::new(api::Shared::new(history.clone(), cfg.metrics.clone()));
    let app = api::router(shared.clone());
    info!("API listening on http://{}", cfg.api.listen);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!("API server stopped: {e}");
        }
    });

    let mut tracker = Tracker::new(&cfg, probe.preexisting.take());
    let mut predictor = cfg.predict.enabled.then(|| crate::predict::Predictor::new(cfg.predict.clone()));
    let mut tick = tokio::time::interval(cfg.agent.interval);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let n = received.load(std::sync::atomic::Ordering::Relaxed);
                match tracker.snapshot(&mut probe, n) {
                    Ok(built) => {
                        let snap = Arc::new(built.snapshot);
                        if let Err(e) = history.append(snap.clone()) {
                            warn!("history: {e:#}");
                        }
                        if let Some(p) = predictor.as_mut() {
                            let pred = p.observe(&snap);
                            for t in &pred.transitions {
                                info!("prediction alert {}", crate::predict::replay::transition_line(t));
                            }
                            shared.publish_predictions(pred);
                        }
                        shared.publish(snap, built.connections);
                    }
                    Err(e) => error!("snapshot failed: {e:#}"),
                }
            }
            _ = hup.recv() => {
                let live = crate::reload::Live { tracker: &mut tracker, predictor: &mut predictor, tick: &mut tick, logs: &logs };
                crate::reload::on_sighup(config_path, &mut cfg, live);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!(
        "stopping; the probe stays attached and counting at {} (`wsguard detach` removes it)",
        probe.pin_path.display()
    );
    Ok(())
}
