//! Raw HTTP/1.0 requests to the agent's API, over TCP or its Unix socket: any method, with or
//! without a bearer token, and the status whatever it is (the security tests need the 401s and
//! 403s that a client library would turn into errors).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result};

/// `method path` to `api` (`http://host:port`) with an optional bearer token and a JSON body:
/// (status, body).
pub fn request(api: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> Result<(u16, String)> {
    let host = api.strip_prefix("http://").context("http")?;
    let s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    exchange(s, host, method, path, token, body)
}

/// The same over the agent's Unix socket.
pub fn unix_request(sock: &Path, method: &str, path: &str, token: Option<&str>, body: &str) -> Result<(u16, String)> {
    let s = std::os::unix::net::UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    exchange(s, "localhost", method, path, token, body)
}

/// The status of `method path` with no token and an empty JSON object as the body.
pub fn status_of(api: &str, method: &str, path: &str) -> Result<u16> {
    Ok(request(api, method, path, None, "{}")?.0)
}

fn exchange<S: Read + Write>(
    mut s: S,
    host: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf.split_whitespace().nth(1).context("no status")?.parse()?;
    Ok((code, buf.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default()))
}
