//! How a client (the CLI, `wsguard top`) reaches the agent's API: `http://HOST:PORT` or
//! `unix:PATH`. Beside the server so that both edges share it without importing each other.

use anyhow::bail;

pub const DEFAULT_API: &str = "http://127.0.0.1:9595";

/// How the CLI reaches the agent: `http://HOST:PORT` (the default, `[api] listen`) or
/// `unix:PATH` (`[api] socket`), where the agent learns our uid from the kernel and root needs
/// no token. A client built from `builder` and the base URL paths go after.
pub fn endpoint(api: &str, builder: reqwest::ClientBuilder) -> anyhow::Result<(reqwest::Client, String)> {
    match api.strip_prefix("unix:") {
        Some("") => bail!("--api unix:PATH needs the socket's path, e.g. unix:/var/lib/wsguard/api.sock"),
        // reqwest connects every request to the socket; the host is only the Host header.
        Some(path) => Ok((builder.unix_socket(path).build()?, "http://localhost".into())),
        None => Ok((builder.build()?, api.trim_end_matches('/').to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("http://127.0.0.1:9/", reqwest::Client::builder()).unwrap().1, "http://127.0.0.1:9");
        assert_eq!(endpoint("unix:/run/wsguard/api.sock", reqwest::Client::builder()).unwrap().1, "http://localhost");
        assert!(endpoint("unix:", reqwest::Client::builder()).unwrap_err().to_string().contains("unix:PATH"));
    }
}
