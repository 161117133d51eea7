//! Silences: label matchers (`=`, `!=`, `=~`, `!~`; regexes anchored as in Alertmanager) with a
//! time range, a creator and a comment. A silenced alert still changes state; it is flagged.

use std::time::SystemTime;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::Labels;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "=~")]
    Re,
    #[serde(rename = "!~")]
    NotRe,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    #[serde(skip)]
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&o.name, o.op, &o.value)
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("invalid regex {value:?}: {e}"))?)
            }
            _ => None,
        };
        Ok(Matcher { name: name.into(), op, value: value.into(), re })
    }

    /// `name=value`, `name!=value`, `name=~regex`, `name!~regex` (value may be double-quoted).
    pub fn parse(s: &str) -> Result<Self, String> {
        let i = s.find(['=', '!']).ok_or_else(|| format!("matcher {s:?}: expected name=value, !=, =~ or !~"))?;
        let (name, rest) = (s[..i].trim(), &s[i..]);
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRe, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::Ne, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Eq, v)
        } else {
            return Err(format!("matcher {s:?}: unknown operator"));
        };
        if name.is_empty() {
            return Err(format!("matcher {s:?}: empty label name"));
        }
        let v = value.trim();
        let v = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v);
        Matcher::new(name, op, v)
    }

    /// A missing label matches as the empty string (as in Alertmanager).
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        let re = || match &self.re {
            Some(r) => r.is_match(v),
            None => Regex::new(&format!("^(?:{})$", self.value)).is_ok_and(|r| r.is_match(v)),
        };
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => re(),
            MatchOp::NotRe => !re(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    /// RFC 3339.
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
    #[serde(skip, default = "epoch")]
    pub(crate) start: SystemTime,
    #[serde(skip, default = "epoch")]
    pub(crate) end: SystemTime,
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

impl Silence {
    /// Rebuild what is not persisted after deserializing: the clock fields (kept as RFC 3339)
    /// and the compiled regexes.
    pub fn restore(&mut self) -> Result<(), String> {
        let parse = |s: &str| humantime::parse_rfc3339(s).map_err(|e| format!("silence {}: {s}: {e}", self.id));
        self.start = parse(&self.starts_at)?;
        self.end = parse(&self.ends_at)?;
        self.matchers = self.matchers.iter().map(|m| Matcher::new(&m.name, m.op, &m.value)).collect::<Result<_, _>>()?;
        Ok(())
    }

    pub fn active(&self, now: SystemTime) -> bool {
        self.start <= now && now < self.end
    }

    /// All matchers must match (and there is at least one).
    pub fn matches(&self, labels: &Labels) -> bool {
        !self.matchers.is_empty() && self.matchers.iter().all(|m| m.matches(labels))
    }
}
