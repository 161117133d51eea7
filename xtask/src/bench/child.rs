//! Child modes of the bench binary: holding idle connections past one process's fd limit, and
//! an open-loop load for profiling by hand.

use super::{load, procs};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Duration;

pub fn hold(spec: &str) -> Result<()> {
    let (port, n) = spec.split_once(':').context("--hold PORT:N")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port.parse::<u16>()?).into();
    let n: usize = n.parse()?;
    procs::raise_nofile(n as u64 + 500);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let conns = rt.block_on(load::open(addr, n))?;
    println!("HELD {}", conns.len());
    // Until the parent kills us (or closes stdin).
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    drop(conns);
    Ok(())
}

pub fn drive(spec: &str) -> Result<()> {
    let f: Vec<&str> = spec.split(':').collect();
    anyhow::ensure!(f.len() == 4, "--drive PORT:CONNS:RATE:SECS");
    let addr: SocketAddr = ([127, 0, 0, 1], f[0].parse::<u16>()?).into();
    let (conns, rate, secs): (usize, f64, f64) = (f[1].parse()?, f[2].parse()?, f[3].parse()?);
    procs::raise_nofile(conns as u64 + 500);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let marks = [Duration::from_secs(1), Duration::from_secs_f64(1.0 + secs)];
    let (ol, _) = rt.block_on(load::open_loop(addr, conns, rate, &marks, |_| ()))?;
    println!(
        "DRIVE {} msgs in {:.1} s ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, lost {}",
        ol.window_msgs,
        ol.window_s,
        ol.window_msgs as f64 / ol.window_s,
        ol.hist.value_at_quantile(0.5) as f64 / 1000.0,
        ol.hist.value_at_quantile(0.99) as f64 / 1000.0,
        ol.expected - ol.received.min(ol.expected)
    );
    Ok(())
}
