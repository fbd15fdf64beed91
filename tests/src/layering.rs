//! The workspace's layers, held against the code: which crate may depend on which (read from
//! each crate's `Cargo.toml` and from the paths its sources name), and, inside `dms-master`,
//! which folder may import which (read from its `crate::` paths).
//!
//! Crates: `dms-common` is the ground and depends on no daemon; `dms-replica` and `dmsctl` talk
//! to the master over gRPC and HTTP only, so they never depend on `dms-master`.
//!
//! `dms-master`'s folders stand in [`MASTER_LAYERS`] from the top down; a file may import its
//! own folder and the folders below it. The imports from a lower folder into a higher one that
//! the layout allows are listed in [`MASTER_UPWARD`], each with its reason (the folder's
//! `//! # Layout` says the same).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `dms-master/src`'s top-level modules from the top floor down.
const MASTER_LAYERS: &[&str] = &[
    "main",
    "server",
    "reload",
    "config",
    "api",
    "ops",
    "replication",
    "tasks",
    "data",
    "pipeline",
    "universe",
    "sources",
    "alerts",
    "metrics",
    "auth",
];

/// Imports from a lower folder into a higher one, (from, to, why).
const MASTER_UPWARD: &[(&str, &str, &str)] = &[];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The names of the packages `crate_dir`'s `Cargo.toml` depends on, in any section.
fn dependencies(crate_dir: &str) -> BTreeSet<String> {
    let manifest = root().join(crate_dir).join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest.display()));
    let mut section = String::new();
    let mut names = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_end_matches(']').to_owned();
            // `[dependencies.name]` and `[target.'cfg(..)'.dependencies.name]`.
            if let Some((_, name)) = section.rsplit_once("dependencies.") {
                names.insert(name.to_owned());
            }
            continue;
        }
        if !section.ends_with("dependencies") || line.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            let name = key.strip_suffix(".workspace").unwrap_or(key);
            names.insert(name.trim_matches('"').to_owned());
        }
    }
    assert!(
        !names.is_empty(),
        "{} lists no dependencies: the manifest's layout changed, update this reader",
        manifest.display()
    );
    names
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The lines of `crate_dir`'s sources (src, tests, benches) that name one of `paths`.
fn naming(crate_dir: &str, paths: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for sub in ["src", "tests", "benches"] {
        let dir = root().join(crate_dir).join(sub);
        if !dir.exists() {
            continue;
        }
        for file in sources(&dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                if paths.iter().any(|p| code.contains(p)) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn replica_and_dmsctl_never_depend_on_the_master() {
    for krate in ["dms-replica", "dmsctl"] {
        let deps = dependencies(krate);
        assert!(
            !deps.contains("dms-master"),
            "{krate} depends on dms-master: it must reach the master over the network only"
        );
        let lines = naming(krate, &["dms_master::", "extern crate dms_master"]);
        assert!(
            lines.is_empty(),
            "{krate} names dms-master:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn dms_common_depends_on_no_daemon() {
    let deps = dependencies("dms-common");
    for daemon in ["dms-master", "dms-replica", "dmsctl"] {
        assert!(
            !deps.contains(daemon),
            "dms-common depends on {daemon}: the ground layer must not"
        );
    }
    let lines = naming("dms-common", &["dms_master::", "dms_replica::", "dmsctl::"]);
    assert!(
        lines.is_empty(),
        "dms-common names a daemon:\n{}",
        lines.join("\n")
    );
}

/// The top-level module of `dms-master/src` a file belongs to.
fn master_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every (from module, to module, file:line) of `crate::to` paths in `dms-master/src`'s
/// production code: a test module may build what it needs from above (a whole config), so
/// `tests.rs` files and what follows a file's `#[cfg(test)]` are left out.
fn master_imports() -> Vec<(String, String, String)> {
    let src = root().join("dms-master/src");
    let mut out = Vec::new();
    for file in sources(&src) {
        let from = master_module(&src, &file);
        if from == "lib" || file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.split("//").next().unwrap_or_default();
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                let after = &rest[i + "crate::".len()..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != from {
                    let place = format!("{}:{}", file.display(), n + 1);
                    out.push((from.clone(), name, place));
                }
                rest = after;
            }
        }
    }
    out
}

#[test]
fn master_folders_import_only_downward() {
    let floor = |m: &str| {
        MASTER_LAYERS
            .iter()
            .position(|l| *l == m)
            .unwrap_or_else(|| panic!("dms-master/src/{m} is in no layer: add it to MASTER_LAYERS"))
    };
    let mut upward = Vec::new();
    let mut allowed_seen = BTreeSet::new();
    for (from, to, place) in master_imports() {
        if floor(&to) > floor(&from) {
            continue;
        }
        match MASTER_UPWARD
            .iter()
            .find(|(f, t, _)| *f == from && *t == to)
        {
            Some(_) => {
                allowed_seen.insert((from, to));
            }
            None => upward.push(format!("{place}: {from} imports {to}, a higher layer")),
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run back up (move the item down, or pass it in):\n{}",
        upward.join("\n")
    );
    for (from, to, why) in MASTER_UPWARD {
        assert!(
            allowed_seen.contains(&(from.to_string(), to.to_string())),
            "MASTER_UPWARD allows {from} -> {to} ({why}) but no file imports it: remove the entry"
        );
    }
    assert!(MASTER_UPWARD.len() <= 2, "at most two upward imports");
}
