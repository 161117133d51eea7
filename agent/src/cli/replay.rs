//! `wsguard replay FILE`: recorded snapshots through the forecasts and the forecast alert rules
//! (`alert/replay.rs`, with `[predict]` and `[alert]` of `--config`), printed; and `wsguard history export`, which writes that format.

use std::{
    io::{BufRead, Write},
    path::Path,
};

use anyhow::{bail, Context, Result};

use crate::{
    alert::{
        replay::{replay, scores_text},
        AlertConfig,
    },
    predict::PredictConfig,
};

/// The CLI command: replay `file` ("-" for stdin) with the `[predict]` and `[alert]` sections
/// the caller loaded (the defaults without `--config`) and print.
pub fn run(file: &Path, cfg: PredictConfig, alert: &AlertConfig, speed: Option<f64>, json: bool) -> Result<()> {
    let reader: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?))
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        let r = replay(reader, cfg, alert, speed, None)?;
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
        return Ok(());
    }
    let r = replay(reader, cfg, alert, speed, Some(&mut out))?;
    let fired = r.transitions.iter().filter(|t| t.to == "firing").count();
    writeln!(
        out,
        "\n{} snapshots from {} to {}; {} skipped lines; {fired} alerts fired",
        r.snapshots,
        r.first.as_deref().unwrap_or("-"),
        r.last.as_deref().unwrap_or("-"),
        r.skipped_lines
    )?;
    writeln!(out, "\nScores (a forecast is scored once its horizon has passed):")?;
    write!(out, "{}", scores_text(&r.scores))?;
    Ok(())
}

/// `wsguard history export --since 2h`: JSON lines of snapshots, from the store in `state_dir`
/// (works while the agent is down) or from the running agent's API.
pub async fn history_export(api: &str, state_dir: Option<&Path>, since: &str) -> Result<()> {
    let t = crate::history::parse_since(since)?;
    let stdout = std::io::stdout();
    let n = match state_dir {
        Some(dir) => {
            let path = dir.join(crate::history::STORE_FILE);
            let store = crate::history::Store::open_read_only(&path)
                .with_context(|| format!("cannot open the history store {}", path.display()))?;
            store.export_jsonl(crate::history::unix_secs(t), None, &mut stdout.lock())?
        }
        None => {
            let resp = super::client::get(api, &format!("/api/v1/history?since={}", since.replace(' ', "%20"))).await?;
            if !resp.status().is_success() {
                bail!("agent answered {}: {}", resp.status(), resp.text().await.unwrap_or_default());
            }
            let list: Vec<serde_json::Value> = resp.json().await.context("history answer")?;
            let mut w = stdout.lock();
            for s in &list {
                serde_json::to_writer(&mut w, s)?;
                writeln!(w)?;
            }
            list.len() as u64
        }
    };
    eprintln!("exported {n} snapshots");
    Ok(())
}
