//! The layers of the server crates, as their imports show them: no module may reach back to
//! itself through a module of another top-level domain (a module and its own children may
//! import each other). One such circle once tied 52 files together, so that every module could
//! reach every other and any edit recompiled all of them.
//!
//! `IMPORTS_CHECK_SRC` points the check at another `src/` directory (e.g. an older checkout), to
//! see it fail where a circle exists.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

type Module = Vec<String>;

/// Every module of a crate (by path from the crate root) and its source.
fn modules(root: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(root).expect("under root").with_extension("");
            let mut module: Module = relative.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                module.pop();
            }
            out.insert(module, std::fs::read_to_string(&path).expect("read source"));
        }
    }
    out
}

/// Paths a source names: `crate::a::b`, `super::a`, `self::a`, and the items of `use crate::{a, b::c}`,
/// outside comments and test modules.
fn named_paths(module: &Module, source: &str) -> Vec<Module> {
    // An inline test module runs to the end of its file; `mod tests;` is only a declaration, and
    // what follows it is the module's own code.
    let code = match source.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &source[..at],
        None => source,
    };
    let code: String = code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let at_word = i == 0 || !ident(bytes[i - 1]);
        let Some(rest) = code.get(i..) else {
            i += 1;
            continue;
        };
        let (mut base, skip) = if at_word && rest.starts_with("crate::") {
            (Vec::new(), "crate::".len())
        } else if at_word && rest.starts_with("self::") {
            (module.clone(), "self::".len())
        } else if at_word && rest.starts_with("super::") {
            let mut base = module.clone();
            let mut skip = 0;
            while code[i + skip..].starts_with("super::") {
                base.pop();
                skip += "super::".len();
            }
            (base, skip)
        } else {
            i += 1;
            continue;
        };
        let tail = &code[i + skip..];
        if let Some(group) = tail.strip_prefix('{') {
            // A `use crate::{a::b, c::{d, e}}` group: the first path of each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(base.iter().cloned().chain(segments(&item)).collect());
                        item.clear();
                    }
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            out.push(base.iter().cloned().chain(segments(&item)).collect());
        } else {
            base.extend(segments(tail));
            out.push(base);
        }
        i += skip;
    }
    out
}

/// The `a::b::C` segments at the start of `text`.
fn segments(text: &str) -> Vec<String> {
    let path: String =
        text.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
    path.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The module graph: each module → the modules it names (the longest existing prefix of each path).
fn graph(root: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = modules(root);
    let mut graph = BTreeMap::new();
    for (module, source) in &modules {
        let mut edges = BTreeSet::new();
        for path in named_paths(module, source) {
            let target = (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| modules.contains_key(m));
            if let Some(target) = target.filter(|t| t != module) {
                edges.insert(target);
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

/// Strongly connected components (Tarjan).
fn components(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a Module) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on_stack.insert(v);
        for next in &w.graph[v] {
            if !w.index.contains_key(next) {
                visit(w, next);
                let low = w.low[v].min(w.low[next]);
                w.low.insert(v, low);
            } else if w.on_stack.contains(next) {
                let low = w.low[v].min(w.index[next]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut component = Vec::new();
            while let Some(m) = w.stack.pop() {
                w.on_stack.remove(m);
                component.push(m.clone());
                if m == v {
                    break;
                }
            }
            w.out.push(component);
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v) {
            visit(&mut walk, v);
        }
    }
    walk.out
}

/// The circles that span more than one top-level module, each as `a -> [b, c]` lines.
fn cross_module_circles(root: &Path) -> Vec<String> {
    let graph = graph(root);
    components(&graph)
        .into_iter()
        .filter(|c| c.iter().map(|m| m.first()).collect::<BTreeSet<_>>().len() > 1)
        .map(|c| {
            let members: BTreeSet<&Module> = c.iter().collect();
            let mut lines: Vec<String> = c
                .iter()
                .map(|m| {
                    let into: Vec<String> =
                        graph[m].iter().filter(|t| members.contains(t)).map(|t| t.join("/")).collect();
                    format!("  {} -> {:?}", m.join("/"), into)
                })
                .collect();
            lines.sort();
            format!("a circle of {} modules:\n{}", c.len(), lines.join("\n"))
        })
        .collect()
}

fn source_dir(crate_dir: &str) -> PathBuf {
    match std::env::var_os("IMPORTS_CHECK_SRC") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(crate_dir).join("src"),
    }
}

#[test]
fn no_module_reaches_back_to_itself_through_another_domain() {
    for crate_dir in ["core", "services", "api"] {
        let root = source_dir(crate_dir);
        let circles = cross_module_circles(&root);
        assert!(circles.is_empty(), "{}:\n{}", root.display(), circles.join("\n"));
    }
}

#[test]
fn the_check_sees_a_circle() {
    let dir = std::env::temp_dir().join(format!("imports-check-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    // A test module's declaration ends nothing: the imports after it count.
    std::fs::write(dir.join("a/mod.rs"), "pub mod child;\n#[cfg(test)]\nmod tests;\nuse crate::b::B;\n").unwrap();
    std::fs::write(dir.join("a/child.rs"), "use super::super::b;\n").unwrap();
    std::fs::write(dir.join("b.rs"), "use crate::{a::child::C, a};\n").unwrap();
    let circles = cross_module_circles(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(circles[0].contains("a circle of 3 modules"), "{circles:?}");
}
