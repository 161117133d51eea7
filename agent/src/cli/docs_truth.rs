//! Tests that the user docs (`docs/*.md`, `README.md`) name only commands, flags and config keys
//! the binary has: the CLI tree comes from clap itself, config keys from the config types
//! (`deny_unknown_fields` everywhere), so a rename that forgets the docs fails here.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::app::config::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("agent/ has a parent").to_path_buf()
}

/// `(file name, text)` of README.md and every docs/*.md.
fn docs() -> Vec<(String, String)> {
    let mut files = vec![repo().join("README.md")];
    let mut md: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    md.sort();
    files.extend(md);
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect()
}

/// Code in a markdown text: lines of fenced blocks (with the block's language) and inline
/// `` `spans` `` elsewhere (language "").
fn code(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(lang.trim().to_owned()),
            };
            continue;
        }
        match &fence {
            Some(lang) => out.push((lang.clone(), line.to_owned())),
            None => {
                for (i, span) in line.split('`').enumerate() {
                    if i % 2 == 1 {
                        out.push((String::new(), span.to_owned()));
                    }
                }
            }
        }
    }
    out
}

/// Invocations `wsguard …` in a line of code: the words after `wsguard` up to a shell operator.
/// `wsguard` must be where a command starts (line start, after `$`, `sudo`, `--`, a shell
/// operator or an environment assignment) or a binary path (`…/bin/wsguard`); `-n wsguard`,
/// `journalctl -u wsguard` or a pin path are not invocations.
fn invocations(line: &str) -> Vec<Vec<String>> {
    const STARTS: [&str; 13] = ["", "$", "#", "sudo", "-E", "--", "|", "||", "&&", ";", "(", "time", "exec"];
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("wsguard ") {
        let head = &rest[..at];
        let before = head.chars().next_back();
        let tail = &rest[at + "wsguard ".len()..];
        rest = tail;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            continue;
        }
        let prev = head.split_whitespace().next_back().unwrap_or_default();
        let command = if before == Some('/') {
            ["bin/", "release/", "debug/"].iter().any(|d| prev.ends_with(d))
        } else {
            STARTS.contains(&prev) || prev.contains('=')
        };
        if !command {
            continue;
        }
        let words = tail
            .split_whitespace()
            .take_while(|w| !["|", "||", "&&", ";", ">", ">>", "2>&1", "&"].contains(w) && !w.starts_with('#'))
            .map(|w| w.trim_matches(|c| "[](),;\"'".contains(c)).to_owned())
            .collect();
        out.push(words);
    }
    out
}

/// What is wrong with `wsguard <words>`, if anything.
fn check_invocation(words: &[String]) -> Option<String> {
    let root = crate::cli::Cli::command();
    let mut cmd = &root;
    let mut path = "wsguard".to_owned();
    let mut i = 0;
    // Global flags of the commands above (`alerts --api` also works after `alerts list`).
    let mut globals: Vec<(Option<String>, Option<char>)> = Vec::new();
    let global = |c: &clap::Command| -> Vec<(Option<String>, Option<char>)> {
        c.get_arguments().filter(|a| a.is_global_set()).map(|a| (a.get_long().map(String::from), a.get_short())).collect()
    };
    while cmd.has_subcommands() {
        globals.extend(global(cmd));
        let w = words.get(i)?;
        if !w.chars().all(|c| c.is_ascii_lowercase() || c == '-') || w.is_empty() || w.starts_with('-') {
            break;
        }
        match cmd.find_subcommand(w) {
            Some(sub) => {
                cmd = sub;
                path = format!("{path} {w}");
                i += 1;
            }
            None if w == "help" => return None,
            None => return Some(format!("`{path} {w}`: no such command")),
        }
    }
    for w in &words[i..] {
        for part in w.split('|') {
            if let Some(long) = part.strip_prefix("--") {
                let long = long.split('=').next().unwrap_or_default();
                if long.is_empty() || long == "help" || (long == "version" && path == "wsguard") {
                    continue;
                }
                if !long.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    continue;
                }
                if !cmd.get_arguments().any(|a| a.get_long() == Some(long))
                    && !globals.iter().any(|(l, _)| l.as_deref() == Some(long))
                {
                    return Some(format!("`{path}` has no flag --{long}"));
                }
            } else if let Some(short) = part.strip_prefix('-').filter(|s| s.len() == 1) {
                let c = short.chars().next().unwrap();
                let known = cmd.get_arguments().any(|a| a.get_short() == Some(c)) || globals.iter().any(|(_, s)| *s == Some(c));
                if c.is_ascii_alphabetic() && c != 'h' && !known {
                    return Some(format!("`{path}` has no flag -{c}"));
                }
            }
        }
    }
    None
}

/// Every `wsguard …` the docs show (and every command row of docs/cli.md's tables) exists,
/// with the flags it is shown with.
#[test]
fn docs_name_only_commands_and_flags_the_binary_has() {
    let mut wrong = Vec::new();
    for (file, text) in docs() {
        for (_, line) in code(&text) {
            for words in invocations(&line) {
                if let Some(e) = check_invocation(&words) {
                    wrong.push(format!("{file}: {e} (in {:?})", line.trim()));
                }
            }
        }
        if file == "cli.md" {
            // Reference tables: "| `report [--hours H]` | …" names commands without "wsguard".
            for line in text.lines().filter(|l| l.starts_with("| `")) {
                let span = line.split('`').nth(1).unwrap_or_default();
                let first = span.split_whitespace().next().unwrap_or_default();
                if first.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !first.is_empty() {
                    let words: Vec<String> =
                        span.split_whitespace().map(|w| w.trim_matches(|c| "[](),".contains(c)).to_owned()).collect();
                    if let Some(e) = check_invocation(&words) {
                        wrong.push(format!("{file}: {e} (in {:?})", line.trim()));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "docs name commands or flags the binary does not have:\n{}", wrong.join("\n"));
}

#[test]
fn the_invocation_checker_catches_what_it_should() {
    let w = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(check_invocation(&w("run --config /etc/x.toml --keep-probe")), None);
    assert_eq!(check_invocation(&w("alerts list --json")), None);
    assert_eq!(check_invocation(&w("alerts list --api unix:/x")), None);
    assert!(check_invocation(&w("frobnicate")).is_some());
    assert!(check_invocation(&w("run --no-such-flag")).is_some());
    assert!(check_invocation(&w("alerts nope")).is_some());
    assert_eq!(invocations("sudo wsguard detach -c x | head"), vec![w("detach -c x")]);
    assert_eq!(invocations("$ /usr/bin/wsguard status --json"), vec![w("status --json")]);
    assert!(invocations("/etc/wsguard/wsguard.toml and wsguard-agent x").is_empty());
    assert!(invocations("kubectl -n wsguard get pods; journalctl -u wsguard -f; at /sys/fs/bpf/wsguard was").is_empty());
}

/// Every TOML example in the docs is a config the binary accepts as far as its keys go (the
/// config types deny unknown fields), and every `` `[section] key` `` the prose names exists.
#[test]
fn docs_name_only_config_keys_the_binary_has() {
    let defaults = serde_json::to_value(Config::default()).expect("config serializes");
    let mut wrong = Vec::new();
    for (file, text) in docs() {
        let mut block = String::new();
        let mut in_toml = false;
        for line in text.lines() {
            let t = line.trim_start();
            if let Some(lang) = t.strip_prefix("```") {
                if in_toml {
                    if let Err(e) = toml::from_str::<Config>(&block) {
                        let msg = e.message();
                        if msg.contains("unknown field") || msg.contains("unknown variant") {
                            wrong.push(format!("{file}: TOML example: {}", msg.lines().next().unwrap_or(msg)));
                        }
                    }
                    block.clear();
                }
                in_toml = !in_toml && lang.trim() == "toml";
                continue;
            }
            if in_toml {
                block.push_str(line);
                block.push('\n');
            }
        }
        for (lang, span) in code(&text) {
            if !lang.is_empty() {
                continue;
            }
            let Some(rest) = span.strip_prefix('[') else { continue };
            let Some((section, after)) = rest.split_once("] ") else { continue };
            let key = after.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).next().unwrap_or("");
            if key.is_empty() || section.starts_with('[') || !section.chars().all(|c| c.is_ascii_lowercase() || "._".contains(c))
            {
                continue;
            }
            let mut v = &defaults;
            for part in section.split('.') {
                v = &v[part];
            }
            // Arrays of tables (channels, rules, actions) are checked through the TOML examples;
            // an optional section that is off by default has nothing to compare with.
            if v.is_array() || v.is_null() {
                continue;
            }
            if v.get(key).is_none() {
                wrong.push(format!("{file}: `[{section}] {key}` is not a config key"));
            }
        }
    }
    assert!(wrong.is_empty(), "docs name config keys the binary does not have:\n{}", wrong.join("\n"));
}

/// The README's first screen (its first 30 lines) tells an operator what the agent costs, in
/// which probe mode, and how to stop it (a stop detaches; `wsguard detach`; `keep_on_stop`).
#[test]
fn readme_first_screen_says_cost_and_stop() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let first: String = readme.lines().take(30).collect::<Vec<_>>().join("\n");
    for needle in
        ["What it costs", "docs/performance.md", "syscall", " ns", "How to stop it", "detaches", "wsguard detach", "keep_on_stop"]
    {
        assert!(first.contains(needle), "README's first screen lacks {needle:?}:\n{first}");
    }
    // Its numbers are docs/performance.md's (a bench run that changes them fails this until
    // the README says the new ones).
    let cost =
        first.split("**What it costs**").nth(1).and_then(|t| t.split("**How to stop it**").next()).expect("cost paragraph");
    let perf = std::fs::read_to_string(repo().join("docs/performance.md")).expect("docs/performance.md");
    let missing: Vec<&str> = numbers(cost).into_iter().filter(|n| !numbers(&perf).contains(n)).collect();
    assert!(missing.is_empty(), "the README's cost figures {missing:?} are not in docs/performance.md:\n{cost}");
}

/// The numbers in a text (`56.2`, `1271`, `2`), as written; a trailing full stop is not theirs.
fn numbers(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.')) {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_digit() || (bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
            {
                i += 1;
            }
            if i == bytes.len() || !bytes[i].is_ascii_alphabetic() || text[i..].starts_with("ns") || text[i..].starts_with("x") {
                out.push(&text[start..i]);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn numbers_are_read_as_written() {
    assert_eq!(numbers("56.2 ns and 80.1ns, 1.60% of 2 cores, 10000 conns. v0.1"), ["56.2", "80.1", "1.60", "2", "10000"]);
}
