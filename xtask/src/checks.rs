//! Checks `cargo xtask lint` runs besides fmt and clippy: no import cycle between the modules of a
//! crate, every relative link of the README and `docs/` pointing at a file (and heading) that
//! exists, and the device audit: every tensor the library code creates names its device.

use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's modules (`a::b` paths, the crate root as ``) and the modules each one names through
/// `crate::...` or `super::...` paths.
fn module_graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    collect_rs(src, &mut files)?;
    let modules: BTreeMap<String, PathBuf> = files
        .into_iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "bin"))
        .map(|f| (module_path(src, &f), f))
        .collect();
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file)?;
        // Code only: not comments (doc links name modules freely), not the tests.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let code = code.as_str();
        let parent = parent_of(module);
        let mut uses = BTreeSet::new();
        for (prefix, base) in [("crate::", String::new()), ("super::", parent.clone())] {
            let mut rest = code;
            while let Some(i) = rest.find(prefix) {
                rest = &rest[i + prefix.len()..];
                let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                // `crate::{a, b::c}` (possibly after a path): every path of the group, from the
                // path before it.
                let group = rest[path.len()..].strip_prefix('{').map(|g| g.split('}').next().unwrap_or(""));
                let paths: Vec<String> = match group {
                    Some(g) => g.split(',').map(|p| format!("{path}{}", p.trim())).collect(),
                    None => vec![path],
                };
                for path in paths {
                    let mut target = base.clone();
                    // The longest known module the path names.
                    for part in path.split("::").filter(|p| !p.is_empty()) {
                        let next = if target.is_empty() { part.to_string() } else { format!("{target}::{part}") };
                        if names.contains(&next) {
                            target = next;
                        } else {
                            break;
                        }
                    }
                    uses.insert(target);
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    Ok(graph)
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// `src/llm/model/mod.rs` -> `llm::model`, `src/lib.rs` -> ``.
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let parts: Vec<&str> =
        parts.iter().map(String::as_str).filter(|p| *p != "mod" && *p != "lib" && *p != "main").collect();
    parts.join("::")
}

fn parent_of(module: &str) -> String {
    module.rsplit_once("::").map(|(p, _)| p.to_string()).unwrap_or_default()
}

fn is_ancestor(a: &str, b: &str) -> bool {
    a.is_empty() || b.starts_with(&format!("{a}::"))
}

/// Cycles between modules of a crate, ignoring a module's uses of its ancestors (a parent
/// re-exports what its children share) and of its descendants: each as the modules in order.
pub fn import_cycles(src: &Path) -> Result<Vec<Vec<String>>> {
    let graph = module_graph(src)?;
    let edges: BTreeMap<&str, Vec<&str>> = graph
        .iter()
        .map(|(m, uses)| {
            let targets = uses
                .iter()
                .filter(|u| *u != m && !is_ancestor(u, m) && !is_ancestor(m, u))
                .map(String::as_str)
                .collect();
            (m.as_str(), targets)
        })
        .collect();
    let mut cycles = Vec::new();
    let mut seen = BTreeSet::new();
    for &start in edges.keys() {
        // Depth-first search for a path back to `start` through modules after it (each cycle once).
        let mut stack = vec![(start, vec![start])];
        while let Some((node, path)) = stack.pop() {
            for &next in edges.get(node).into_iter().flatten() {
                if next == start {
                    let mut key: Vec<&str> = path.clone();
                    key.sort();
                    if seen.insert(key) {
                        cycles.push(path.iter().map(|s| s.to_string()).collect());
                    }
                } else if next > start && !path.contains(&next) && path.len() < 6 {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push((next, p));
                }
            }
        }
    }
    Ok(cycles)
}

/// GitHub's anchor of a heading: lower case, spaces to `-`, punctuation but `-` and `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every relative link `[text](target)` of the Markdown file `page` whose file (or heading, after
/// `#`) does not exist, as `page: target (why)`.
pub fn broken_links(page: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(page)?;
    let dir = page.parent().unwrap_or(Path::new("."));
    let mut broken = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        rest = &rest[end..];
        if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
            continue;
        }
        let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
        let path = if file.is_empty() { page.to_path_buf() } else { dir.join(file) };
        if !path.exists() {
            broken.push(format!("{}: {target} (no such file)", page.display()));
            continue;
        }
        if !anchor.is_empty() && path.extension().is_some_and(|e| e == "md") {
            let headings = anchors(&std::fs::read_to_string(&path)?);
            if !headings.contains(anchor) {
                broken.push(format!("{}: {target} (no heading `#{anchor}`)", page.display()));
            }
        }
    }
    Ok(broken)
}

/// The README's length limit.
pub const README_LINES: usize = 250;

/// Constructors that create a tensor on the CPU unless told otherwise.
const CONSTRUCTORS: [&str; 12] = [
    "Tensor::zeros(",
    "Tensor::ones(",
    "Tensor::full(",
    "Tensor::arange(",
    "Tensor::arange_start(",
    "Tensor::eye(",
    "Tensor::randn(",
    "Tensor::rand(",
    "Tensor::empty(",
    "Tensor::from_slice(",
    "Tensor::from_slice2(",
    "Tensor::from(",
];

/// The device audit over one source file: every tensor constructor outside test code whose
/// statement names no device (`device`, `Device::`, `.to_device(`, `opts` / `options` holding
/// one, or a `*_like(` of an existing tensor) and carries no `// cpu:` comment saying why the CPU
/// is meant. Returns `file:line: text` of each. On a GPU such a tensor meets a CUDA one and the
/// op fails, or it silently moves work to the CPU; without a GPU only this audit sees it.
pub fn device_audit(file: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file)?;
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return Ok(Vec::new());
    }
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(cut) => &text[..cut],
        None => &text,
    };
    let lines: Vec<&str> = body.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for c in CONSTRUCTORS {
            let Some(at) = line.find(c) else { continue };
            // The statement: from the constructor to its `;` (at most four lines), plus the
            // comment lines just above it.
            let mut stmt = line[at..].to_string();
            for next in lines.iter().skip(i + 1).take(3) {
                if stmt.contains(';') {
                    break;
                }
                stmt.push_str(next);
            }
            let stmt = stmt.split(';').next().unwrap_or_default();
            let above = lines[..i].iter().rev().take_while(|l| l.trim_start().starts_with("//"));
            let says_cpu = line.contains("// cpu:") || above.into_iter().any(|l| l.contains("// cpu:"));
            let named =
                ["device", "Device::", ".to_device(", "opts", "options", "_like("].iter().any(|k| stmt.contains(k));
            if !named && !says_cpu {
                found.push(format!("{}:{}: {}", file.display(), i + 1, code));
            }
        }
    }
    Ok(found)
}

/// Runs the checks over the workspace; the error lists every problem.
pub fn run(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    for dir in ["crates", "xtask"] {
        let base = root.join(dir);
        let crates: Vec<PathBuf> = if dir == "xtask" {
            vec![base]
        } else {
            std::fs::read_dir(&base)?.filter_map(|e| e.ok().map(|e| e.path())).collect()
        };
        for krate in crates {
            let src = krate.join("src");
            if src.is_dir() {
                for cycle in import_cycles(&src)? {
                    problems.push(format!("{}: import cycle {}", krate.display(), cycle.join(" -> ")));
                }
                if dir == "crates" {
                    let mut files = Vec::new();
                    collect_rs(&src, &mut files)?;
                    for file in files {
                        for hit in device_audit(&file)? {
                            problems.push(format!("{hit} (a tensor without a device; add one or `// cpu: why`)"));
                        }
                    }
                }
            }
        }
    }
    // The README is a front door: short, and no table a command rewrites (those live in docs/).
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let lines = readme.lines().count();
    if lines > README_LINES {
        problems.push(format!("README.md: {lines} lines, more than {README_LINES} (move details to docs/)"));
    }
    if readme.contains(":start -->") {
        problems.push("README.md: holds a generated table (`<!-- ...:start -->`); it belongs in docs/".into());
    }
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs"))? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "md") {
            pages.push(p);
        }
    }
    for page in pages {
        problems.extend(broken_links(&page)?);
    }
    if !problems.is_empty() {
        bail!("{} problem(s):\n  {}", problems.len(), problems.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn sibling_modules_that_import_each_other_are_a_cycle() {
        let tmp = std::env::temp_dir().join(format!("moram-cycles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        write(&tmp, "lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
        write(&tmp, "a.rs", "use crate::b::Thing;\n");
        write(&tmp, "b.rs", "use super::a::Other;\n#[cfg(test)]\nmod t { use crate::c::X; }\n");
        write(&tmp, "c/mod.rs", "pub mod d;\nuse d::Y;\n");
        write(&tmp, "c/d.rs", "use super::super::c::Z;\nuse crate::c::W;\n");
        let cycles = import_cycles(&tmp).unwrap();
        assert_eq!(cycles, vec![vec!["a".to_string(), "b".to_string()]], "a child using its parent is no cycle");
        write(&tmp, "b.rs", "pub struct Thing;\n");
        assert!(import_cycles(&tmp).unwrap().is_empty());
        // A grouped import names every module of its group.
        write(&tmp, "b.rs", "use crate::{c, a};\n");
        assert_eq!(import_cycles(&tmp).unwrap(), vec![vec!["a".to_string(), "b".to_string()]]);
        write(&tmp, "b.rs", "pub struct Thing;\n");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_device_audit_flags_tensors_without_a_device_outside_tests() {
        let tmp = std::env::temp_dir().join(format!("moram-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let text = "fn f(x: &Tensor) {\n    let a = Tensor::zeros([2], (Kind::Float, x.device()));\n    \
                    let b = Tensor::from_slice(&[1i64, 2]);\n    let c = Tensor::from_slice(&[1i64])\n        \
                    .to_device(x.device());\n    // cpu: a host-side index\n    let d = Tensor::arange(3, \
                    (Kind::Int64, Device::Cpu));\n    let e = Tensor::ones([2], opts); // cpu: ok\n}\n\
                    #[cfg(test)]\nmod tests {\n    fn g() { let z = Tensor::zeros([1], (Kind::Float, \
                    Device::Cpu)); let y = Tensor::from_slice(&[1]); }\n}\n";
        write(&tmp, "a.rs", text);
        let found = device_audit(&tmp.join("a.rs")).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].ends_with("a.rs:3: let b = Tensor::from_slice(&[1i64, 2]);"), "{found:?}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn links_to_missing_files_and_headings_are_reported() {
        let tmp = std::env::temp_dir().join(format!("moram-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        write(&tmp, "docs/a.md", "# Title\n\n## Speed and memory (CPU)\n\n```\n# not a heading\n```\n");
        write(
            &tmp,
            "README.md",
            "[ok](docs/a.md) [ok](docs/a.md#speed-and-memory-cpu) [web](https://x.org/y) [gone](docs/b.md) \
             [bad](docs/a.md#not-a-heading) [here](#top)\n\n# Top\n",
        );
        let broken = broken_links(&tmp.join("README.md")).unwrap();
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[0].ends_with("docs/b.md (no such file)") && broken[1].contains("no heading `#not-a-heading`"));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

#[cfg(test)]
mod workspace {
    /// The workspace itself: `cargo xtask test` (and CI) runs what `cargo xtask lint` checks.
    #[test]
    fn the_workspace_has_no_import_cycle_and_no_broken_link() {
        super::run(&crate::paths::workspace_root()).unwrap();
    }
}
