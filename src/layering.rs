//! The layout's rules, read from the sources: each part of `src/` uses only
//! the parts before it (the order in `lib.rs`'s map), the runtime never
//! names the user's modules or jobs, and no module imports another in a
//! circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each part, and the parts it may use (besides itself).
const ALLOWED: &[(&str, &[&str])] = &[
    ("common", &[]),
    ("events", &["common"]),
    ("config", &["common"]),
    ("predict", &["common", "events", "config"]),
    ("db", &["common", "events", "config"]),
    ("kafka", &["common", "events", "config"]),
    ("schedule", &["common", "events", "config", "db", "kafka"]),
    ("consume", &["common", "events", "config", "db", "kafka", "schedule"]),
    ("deliver", &["common", "events", "config", "db", "schedule"]),
    ("market", &["common", "events", "config", "db", "kafka", "schedule"]),
    ("http", &["common", "events", "config", "db", "kafka", "schedule", "consume", "deliver", "market", "predict"]),
    (
        "app",
        &["common", "events", "config", "db", "kafka", "schedule", "consume", "deliver", "market", "predict", "http"],
    ),
    (
        "cli",
        &[
            "common", "events", "config", "db", "kafka", "schedule", "consume", "deliver", "market", "predict", "http",
            "app",
        ],
    ),
];

/// The part a top-level name of the crate belongs to (the exported macros
/// are the database's; `registry` is wired with the app).
fn part_of(name: &str) -> &str {
    match name {
        "on_backend" | "write_tx" | "prepared" => "db",
        "registry" => "app",
        other => other,
    }
}

/// Every `.rs` file under `dir`, with its module path (`consume/pipeline`
/// for `consume/pipeline/mod.rs`).
fn sources(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            sources(&path, &format!("{prefix}{name}/"), out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let module =
                if stem == "mod" { prefix.trim_end_matches('/').to_string() } else { format!("{prefix}{stem}") };
            out.push((module, path));
        }
    }
}

/// The source without comments (a doc link is no dependency) and without
/// its tests (at the end of a file, after `#[cfg(test)]`).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The paths a `use` tree or a path expression starting at `text` names,
/// each as its segments (`a::{b, c::d}` → `a::b`, `a::c::d`).
fn paths(text: &str) -> Vec<Vec<String>> {
    let ident = |t: &str| t.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let name = ident(text);
    if name.is_empty() {
        return vec![];
    }
    let rest = &text[name.len()..];
    let Some(rest) = rest.strip_prefix("::") else { return vec![vec![name]] };
    let tails = match rest.strip_prefix('{') {
        Some(group) => {
            let (mut depth, mut items, mut start) = (0, Vec::new(), 0);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        items.push(&group[start..i]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&group[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            items.into_iter().flat_map(|item| paths(item.trim())).collect()
        }
        None => paths(rest),
    };
    if tails.is_empty() {
        return vec![vec![name]];
    }
    tails.into_iter().map(|t| std::iter::once(name.clone()).chain(t).collect()).collect()
}

/// The module paths `text` names after `crate::` (or, resolved against
/// `module`, after `super::`).
fn named_modules(module: &str, text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let own: Vec<&str> = module.split('/').collect();
    for (root, base) in [("crate::", vec![]), ("super::", own[..own.len().saturating_sub(1)].to_vec())] {
        for (i, _) in text.match_indices(root) {
            if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in paths(&text[i + root.len()..]) {
                out.push(base.iter().map(|s| s.to_string()).chain(path).collect());
            }
        }
    }
    out
}

fn all_sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "", &mut files);
    files.into_iter().map(|(m, p)| (m, code(&std::fs::read_to_string(p).unwrap()))).collect()
}

/// The uses against the direction in `files` (module path, code).
fn against_the_direction(files: &[(String, String)]) -> BTreeSet<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut broken = BTreeSet::new();
    for (module, text) in files {
        let part = part_of(module.split('/').next().unwrap_or_default());
        if matches!(part, "lib" | "main" | "layering") {
            continue;
        }
        let Some(may) = allowed.get(part) else {
            broken.insert(format!("{module}: {part} is no part in ALLOWED"));
            continue;
        };
        for used in named_modules(module, text) {
            let other = part_of(&used[0]);
            if other == part {
                continue;
            }
            if matches!(other, "consumers" | "jobs") {
                broken.insert(format!("{module} names the user's {other}"));
            } else if !may.contains(&other) {
                broken.insert(format!("{module} ({part}) uses {} ({other})", used.join("::")));
            }
        }
    }
    broken
}

/// The modules of `files` that reach themselves through others.
fn circles(files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeSet<&String> = files.iter().map(|(m, _)| m).collect();
    // Each module's uses of others, not of its own ancestors (a child using its parent's items is no circle).
    let mut uses: BTreeMap<&String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in files {
        for used in named_modules(module, text) {
            let target = (1..=used.len()).rev().map(|n| used[..n].join("/")).find(|m| modules.contains(m));
            let Some(target) = target else { continue };
            if !(module.starts_with(&format!("{target}/")) || target == *module) {
                uses.entry(module).or_default().insert(target);
            }
        }
    }
    let mut found = Vec::new();
    for start in uses.keys() {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![start.to_string()]);
        while let Some(m) = todo.pop() {
            for next in uses.get(&m).into_iter().flatten() {
                if next == *start {
                    found.push(format!("{start} -> ... -> {m} -> {start}"));
                } else if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
    }
    found
}

#[test]
fn dependencies_run_one_way() {
    let broken = against_the_direction(&all_sources());
    assert!(broken.is_empty(), "uses against the direction:\n{}", broken.into_iter().collect::<Vec<_>>().join("\n"));
}

#[test]
fn no_module_imports_another_in_a_circle() {
    let found = circles(&all_sources());
    assert!(found.is_empty(), "modules in a circle:\n{}", found.join("\n"));
}

#[test]
fn the_rules_see_what_they_check() {
    let text = "use crate::db::{self, notifications::{Notification, PENDING}};\nuse super::sink::Sink;\n\
                let x = crate::events::Committed.emit(); // crate::cli in a comment\n#[cfg(test)]\nmod tests { crate::app }";
    let found = named_modules("consume/pipeline/batches", &code(text));
    let joined: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    let want = ["db::self", "db::notifications::Notification", "db::notifications::PENDING", "events::Committed"];
    assert_eq!(joined, [&want[..], &["consume::pipeline::sink::Sink"]].concat());
    let file = |m: &str, t: &str| (m.to_string(), t.to_string());
    let wrong = [file("db/x", "use crate::consume::sink::Sink;"), file("market/y", "crate::jobs::registry()")];
    let broken: Vec<String> = against_the_direction(&wrong).into_iter().collect();
    assert_eq!(broken, ["db/x (db) uses consume::sink::Sink (consume)", "market/y names the user's jobs"]);
    let ring =
        [file("consume/a", "use super::b::B;"), file("consume/b", "use crate::consume::a::A;"), file("consume", "")];
    assert_eq!(circles(&ring).len(), 2, "{:?}", circles(&ring));
    assert!(circles(&ring[1..]).is_empty());
}
