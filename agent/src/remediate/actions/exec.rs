//! `exec`: run a command (argv, no shell) with the alert as JSON on stdin and in `WSGUARD_*`
//! environment variables, as an unprivileged user by default, in its own process group so
//! that a timeout kills everything it started. Output (stdout then stderr) is captured and
//! truncated for the audit log.

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::RunResult;

/// Bytes of each stream kept for the audit log.
pub const OUTPUT_LIMIT: usize = 4096;

/// uid and gid of a user name.
pub fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    // SAFETY: passwd is plain old data; getpwnam_r fills it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid pointers and buffer length; `out` points into `pw` on success.
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return Err(format!("no such user {name:?}"));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

/// Read a stream to its end, keeping the first `limit` bytes (the rest is drained so the
/// child never blocks on a full pipe).
async fn capture(mut r: impl AsyncRead + Unpin, limit: usize) -> (Vec<u8>, usize) {
    let mut kept = Vec::new();
    let mut total = 0;
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n;
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    (kept, total)
}

fn show(name: &str, (kept, total): &(Vec<u8>, usize)) -> String {
    if *total == 0 {
        return String::new();
    }
    let more = if *total > kept.len() { format!(" …[{} more bytes]", total - kept.len()) } else { String::new() };
    format!("\n{name}: {}{more}", String::from_utf8_lossy(kept).trim_end())
}

/// Run `argv` as `user` (None: as the agent, i.e. root) with `env` and `stdin`.
pub async fn run(
    argv: &[String],
    user: Option<(u32, u32)>,
    env: &BTreeMap<String, String>,
    stdin: String,
    timeout: Duration,
) -> RunResult {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some((uid, gid)) = user {
        // std drops supplementary groups (setgroups(0)) when a root parent sets a uid.
        cmd.uid(uid).gid(gid);
    }
    let started = std::time::Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return RunResult::failed(format!("cannot start {}: {e}", argv[0])),
    };
    let pgid = child.id();
    let mut sin = child.stdin.take();
    let out = tokio::spawn(capture(child.stdout.take().expect("piped"), OUTPUT_LIMIT));
    let err = tokio::spawn(capture(child.stderr.take().expect("piped"), OUTPUT_LIMIT));
    let work = async {
        if let Some(s) = sin.as_mut() {
            // A command that does not read its stdin closes the pipe: not an error.
            let _ = s.write_all(stdin.as_bytes()).await;
        }
        drop(sin);
        child.wait().await
    };
    let status = tokio::time::timeout(timeout, work).await;
    let secs = started.elapsed().as_secs_f64();
    let (result, what) = match status {
        Ok(Ok(st)) if st.success() => ("ok", "exited 0".to_string()),
        Ok(Ok(st)) => ("failed", format!("exited with {st}")),
        Ok(Err(e)) => ("failed", format!("wait: {e}")),
        Err(_) => {
            if let Some(p) = pgid {
                // SAFETY: signalling the process group we created (process_group(0)).
                unsafe { libc::kill(-(p as i32), libc::SIGKILL) };
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            ("timeout", format!("killed after the {}s timeout", timeout.as_secs_f64()))
        }
    };
    // The group is dead or done; a grandchild that left it could still hold a pipe open.
    let grab = |h: tokio::task::JoinHandle<(Vec<u8>, usize)>| async move {
        tokio::time::timeout(Duration::from_secs(2), h).await.ok().and_then(Result::ok).unwrap_or_default()
    };
    let (o, e) = (grab(out).await, grab(err).await);
    RunResult {
        result: result.into(),
        detail: format!("{} {what} in {secs:.1}s{}{}", argv[0], show("stdout", &o), show("stderr", &e)),
        after: json!({ "duration_seconds": secs, "stdout_bytes": o.1, "stderr_bytes": e.1 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[tokio::test]
    async fn stdin_env_output_and_exit() {
        let env = BTreeMap::from([("WSGUARD_ALERTNAME".to_string(), "FdUsageHigh".to_string())]);
        let r = run(
            &argv(&["/bin/sh", "-c", "cat; echo \" $WSGUARD_ALERTNAME\"; echo oops >&2"]),
            None,
            &env,
            "{\"a\":1}".into(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r.result, "ok", "{}", r.detail);
        assert!(r.detail.contains("stdout: {\"a\":1} FdUsageHigh") && r.detail.contains("stderr: oops"), "{}", r.detail);
        let r = run(&argv(&["/bin/sh", "-c", "exit 3"]), None, &env, String::new(), Duration::from_secs(10)).await;
        assert_eq!(r.result, "failed");
        assert!(r.detail.contains("exit status: 3"), "{}", r.detail);
        let r = run(&argv(&["/nonexistent"]), None, &env, String::new(), Duration::from_secs(10)).await;
        assert!(r.detail.contains("cannot start"));
    }

    #[tokio::test]
    async fn output_is_truncated() {
        let r = run(
            &argv(&["/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"]),
            None,
            &BTreeMap::new(),
            String::new(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r.result, "ok");
        assert!(r.detail.contains(&format!("…[{} more bytes]", 100000 - OUTPUT_LIMIT)), "{}", &r.detail[r.detail.len() - 60..]);
        assert_eq!(r.after["stdout_bytes"], 100000);
    }

    #[tokio::test]
    async fn a_hanging_command_and_its_children_are_killed_at_the_timeout() {
        let t = std::time::Instant::now();
        // The shell starts a child sleeper that holds stdout open: both must die.
        let r = run(
            &argv(&["/bin/sh", "-c", "sleep 300 & sleep 300"]),
            None,
            &BTreeMap::new(),
            String::new(),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(r.result, "timeout", "{}", r.detail);
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    }

    #[test]
    fn users() {
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
        assert!(lookup_user("no-such-user-wsguard").is_err());
    }

    #[tokio::test]
    async fn runs_as_the_given_user() {
        if unsafe { libc::geteuid() } != 0 {
            crate::util::test_skip("needs root to change user");
            return;
        }
        let nobody = lookup_user("nobody").unwrap();
        let r = run(
            &argv(&["/bin/sh", "-c", "id -u; id -G"]),
            Some(nobody),
            &BTreeMap::new(),
            String::new(),
            Duration::from_secs(10),
        )
        .await;
        assert!(r.detail.contains(&format!("stdout: {}\n{}", nobody.0, nobody.1)), "{}", r.detail);
    }
}
