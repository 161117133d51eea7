//! `cargo xtask lint` (also the first step of `cargo xtask test`): formatting, clippy with
//! warnings as errors, and the import rule of `docs/architecture.md`.
//!
//! The import rule is checked from the source text, so it stays true without anyone
//! remembering it: every `crate::` path in `agent/src` and `agent-ebpf/src` is an edge from the
//! top-level module of the file to the top-level module it names. The graph of top-level modules
//! must have no cycle, and nothing below the edges may import an edge module (`app`, `api`,
//! `cli`, `top`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use crate::util::{self, step};

/// The modules at the edges of `agent/src`: they may import everything below, nothing below
/// may import them.
const EDGES: &[&str] = &["app", "api", "cli", "top"];

#[derive(clap::Args)]
pub struct LintArgs {}

pub fn run(_: &LintArgs) -> Result<()> {
    let mut failures = Vec::new();
    let root = util::workspace_root();

    step("lint: module imports point one way (agent/src, agent-ebpf/src)");
    if let Err(err) = check_tree(&root) {
        println!("    FAILED: {err:#}");
        failures.push("module imports");
    }

    step("lint: cargo fmt --check (workspace and agent-ebpf)");
    let fmt_ok = util::run(util::cargo().args(["fmt", "--all", "--check"])).is_ok()
        && util::run(util::cargo().args(["fmt", "--check", "--manifest-path"]).arg(root.join("agent-ebpf/Cargo.toml"))).is_ok();
    if !fmt_ok {
        println!("    FAILED: run `cargo fmt --all` and `cargo fmt --manifest-path agent-ebpf/Cargo.toml`");
        failures.push("formatting");
    }

    step("lint: cargo clippy --workspace --all-targets -- -D warnings");
    if let Err(err) = util::run(util::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])) {
        println!("    FAILED: {err:#}");
        failures.push("clippy");
    }

    if failures.is_empty() {
        Ok(())
    } else {
        bail!("lint failed: {}", failures.join(", "))
    }
}

/// Checks both crates of the repository.
pub fn check_tree(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    for (dir, edges) in [("agent/src", EDGES), ("agent-ebpf/src", &[][..])] {
        let graph = module_graph(&root.join(dir))?;
        problems.extend(violations(&graph, edges).into_iter().map(|p| format!("{dir}: {p}")));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n    "))
    }
}

/// Top-level module → the top-level modules its files name, with one file that does it.
pub type Graph = BTreeMap<String, BTreeMap<String, PathBuf>>;

/// Reads every `.rs` file under `src` (a crate's source root; `lib.rs` and `main.rs` are the
/// root, not a module) into the graph of its top-level modules.
pub fn module_graph(src: &Path) -> Result<Graph> {
    let mut graph = Graph::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).expect("under src");
        let Some(module) = top_module(rel) else { continue };
        let text = fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        let deps = graph.entry(module.clone()).or_default();
        for dep in crate_refs(&text) {
            if dep != module {
                deps.entry(dep).or_insert_with(|| rel.to_path_buf());
            }
        }
    }
    Ok(graph)
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `alert/engine.rs` → `alert`, `health.rs` → `health`; the crate roots → none.
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    if rel.components().count() == 1 {
        let stem = first.strip_suffix(".rs")?;
        (!matches!(stem, "lib" | "main")).then(|| stem.to_string())
    } else {
        Some(first.to_string())
    }
}

/// The first segment after every `crate::` in code (comments skipped), groups included:
/// `use crate::{a::X, b};` names `a` and `b`.
pub fn crate_refs(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `wsguard_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 1 => {
                        item_start = false;
                        let name = ident(&group[j..]);
                        if !name.is_empty() && name != "self" {
                            out.insert(name.to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
    }
    out
}

fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Cycles (each reported once, as a path) and imports of an edge module from below.
pub fn violations(graph: &Graph, edges: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (module, deps) in graph {
        if edges.contains(&module.as_str()) {
            continue;
        }
        for (dep, file) in deps {
            if edges.contains(&dep.as_str()) {
                out.push(format!("{module} imports the edge module {dep} ({})", file.display()));
            }
        }
    }
    for cycle in cycles(graph) {
        let path: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("{} ({})", w[0], graph[&w[0]][&w[1]].display()))
            .chain(cycle.last().cloned())
            .collect();
        out.push(format!("import cycle: {}", path.join(" → ")));
    }
    out
}

/// One cycle per strongly connected component with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        sccs: Vec<Vec<&'a str>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|d| d.keys()) {
                let w = w.as_str();
                if !self.graph.contains_key(w) {
                    continue; // not a module of this crate (e.g. a macro path)
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    self.sccs.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        sccs: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    // Within each component, walk from its smallest module until the walk comes back.
    let mut out = Vec::new();
    for scc in t.sccs {
        let members: BTreeSet<&str> = scc.iter().copied().collect();
        let start = *members.iter().next().expect("non-empty");
        out.push(path_back(graph, start, &members));
    }
    out
}

/// A shortest path start → … → start inside `members` (breadth first).
fn path_back(graph: &Graph, start: &str, members: &BTreeSet<&str>) -> Vec<String> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph[v].keys().map(String::as_str).filter(|w| members.contains(w)) {
            if w == start {
                let mut path = vec![start.to_string()];
                let mut at = v;
                while at != start {
                    path.push(at.to_string());
                    at = prev[at];
                }
                path.push(start.to_string());
                path.reverse(); // built backwards: start, v, ..., first hop, start
                return path;
            }
            if !prev.contains_key(w) && w != start {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string(), PathBuf::from(format!("{a}.rs")));
            g.entry(b.to_string()).or_default();
        }
        g
    }

    #[test]
    fn refs_plain_grouped_and_commented() {
        let text = "use crate::{model::snapshot::{Frames, Snapshot}, probe, self};\n\
                    use crate::track::conns::Limits;\n\
                    // crate::app is only named in a comment\n\
                    fn f() { crate::util::private_file::write(); wsguard_crate::x(); }\n";
        let got: Vec<_> = crate_refs(text).into_iter().collect();
        assert_eq!(got, ["model", "probe", "track", "util"]);
    }

    #[test]
    fn top_modules() {
        assert_eq!(top_module(Path::new("alert/engine.rs")).as_deref(), Some("alert"));
        assert_eq!(top_module(Path::new("health.rs")).as_deref(), Some("health"));
        assert_eq!(top_module(Path::new("lib.rs")), None);
        assert_eq!(top_module(Path::new("main.rs")), None);
    }

    #[test]
    fn finds_a_cycle_and_an_edge_import() {
        let g = graph(&[("model", "util"), ("track", "model"), ("probe", "track"), ("track", "probe"), ("alert", "api")]);
        let v = violations(&g, EDGES);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().any(|p| p.starts_with("alert imports the edge module api")), "{v:?}");
        assert!(v.iter().any(|p| p == "import cycle: probe (probe.rs) → track (track.rs) → probe"), "{v:?}");
    }

    #[test]
    fn a_long_cycle_is_reported_in_order() {
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
        assert_eq!(violations(&g, &[]), ["import cycle: a (a.rs) → b (b.rs) → c (c.rs) → a"]);
    }

    #[test]
    fn a_clean_graph_passes() {
        let g = graph(&[("app", "api"), ("api", "alert"), ("alert", "model"), ("app", "model")]);
        assert!(violations(&g, EDGES).is_empty());
    }

    /// The real tree: `agent/src` and `agent-ebpf/src` keep their imports pointing one way.
    #[test]
    fn the_repository_imports_point_one_way() {
        check_tree(&util::workspace_root()).unwrap();
    }
}
