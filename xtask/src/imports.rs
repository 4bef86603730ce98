//! `cargo xtask check-imports`: no circle of imports between the source files of `tracer/src`
//! and `xtask/src`. A circle means no file in it can be understood, or moved, without the
//! others; CI fails on a new one.
//!
//! Read from the code's tokens (comments and strings are not code): every path that starts at
//! `crate`, `super`, `self`, a child module, or a module a `use` brought in, in `use` lines,
//! in code and in macro bodies. A path is followed to the file that defines what it names,
//! through `pub use` re-exports and to the file of a `macro_rules!`. One kind of arrow is
//! left out: a module using an item of one of its ancestors (`super::Report` in
//! `report/text.rs`), since a child is part of the room that holds it; every other arrow
//! counts, a parent's use of its child included.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    path::{Path, PathBuf},
    str::FromStr,
};

use proc_macro2::{Delimiter, TokenStream, TokenTree};

use crate::{tools, workspace, Result};

/// The crates checked, by their root file.
const ROOTS: [&str; 3] = [
    "tracer/src/lib.rs",
    "tracer-ebpf/src/main.rs",
    "xtask/src/main.rs",
];

pub fn check() -> Result {
    let root = workspace();
    let mut circles = 0;
    for crate_root in ROOTS {
        let graph = arrows_of(&root, &root.join(crate_root))?;
        for circle in circles_of(&graph) {
            circles += 1;
            print_circle(&graph, &circle);
        }
    }
    match circles {
        0 => {
            tools::say(&format!("no import circles in {}", ROOTS.join(", ")));
            Ok(())
        }
        n => Err(format!("{n} import circle(s): break each arrow that runs back").into()),
    }
}

/// Every arrow between two files of the crate whose root file is `crate_root`.
fn arrows_of(workspace: &Path, crate_root: &Path) -> Result<Arrows> {
    Ok(Crate::read(workspace, crate_root)?.arrows())
}

/// A module, by its path from the crate root (`["probes", "plan"]`).
type ModulePath = Vec<String>;

/// From one file to another: the names the first takes from the second.
type Arrows = BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>>;

/// One `use` leaf: the path it names and the name it binds.
struct UseLeaf {
    path: Vec<String>,
    binds: String,
    public: bool,
}

/// A crate's modules, read from its files.
struct Crate {
    files: BTreeMap<ModulePath, PathBuf>,
    /// Inline modules (`mod tests { .. }`) are part of their file's module for arrows, but
    /// `super` inside them starts one level down.
    tokens: Vec<(ModulePath, TokenStream)>,
    /// Per module: the `use` leaves written in it.
    uses: HashMap<ModulePath, Vec<UseLeaf>>,
    /// Where each `macro_rules!` is defined.
    macros: HashMap<String, ModulePath>,
}

impl Crate {
    fn read(workspace: &Path, root_file: &Path) -> Result<Self> {
        let mut this = Crate {
            files: BTreeMap::new(),
            tokens: Vec::new(),
            uses: HashMap::new(),
            macros: HashMap::new(),
        };
        let dir = root_file.parent().ok_or("root file without a folder")?;
        this.read_module(workspace, Vec::new(), root_file, dir)?;
        Ok(this)
    }

    /// Reads the module at `file`, whose child modules live in `children_dir`, and its
    /// children.
    fn read_module(
        &mut self,
        workspace: &Path,
        module: ModulePath,
        file: &Path,
        children_dir: &Path,
    ) -> Result {
        let text = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let tokens = TokenStream::from_str(&text)
            .map_err(|e| format!("{}: not Rust tokens: {e}", file.display()))?;
        let relative = file.strip_prefix(workspace).unwrap_or(file).to_path_buf();
        self.files.insert(module.clone(), relative);
        let mut children = Vec::new();
        self.scan_declarations(&module, tokens.clone(), &mut children);
        self.tokens.push((module.clone(), tokens));
        for child in children {
            let flat = children_dir.join(format!("{child}.rs"));
            let (child_file, child_dir) = match flat.is_file() {
                true => (flat, children_dir.join(&child)),
                false => (
                    children_dir.join(&child).join("mod.rs"),
                    children_dir.join(&child),
                ),
            };
            let mut path = module.clone();
            path.push(child);
            self.read_module(workspace, path, &child_file, &child_dir)?;
        }
        Ok(())
    }

    /// Collects `mod name;` declarations (files to read), `use` leaves and macro
    /// definitions of `module`, descending into inline modules.
    fn scan_declarations(
        &mut self,
        module: &ModulePath,
        tokens: TokenStream,
        children: &mut Vec<String>,
    ) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match (&tokens[i], tokens.get(i + 1), tokens.get(i + 2)) {
                (TokenTree::Ident(kw), Some(TokenTree::Ident(name)), Some(next)) if kw == "mod" => {
                    match next {
                        TokenTree::Punct(p) if p.as_char() == ';' => {
                            children.push(name.to_string())
                        }
                        TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
                            let mut inner = module.clone();
                            inner.push(name.to_string());
                            self.scan_declarations(&inner, g.stream(), &mut Vec::new());
                        }
                        _ => {}
                    }
                    i += 3;
                    continue;
                }
                (
                    TokenTree::Ident(kw),
                    Some(TokenTree::Punct(bang)),
                    Some(TokenTree::Ident(name)),
                ) if kw == "macro_rules" && bang.as_char() == '!' => {
                    self.macros.insert(name.to_string(), module.clone());
                }
                (TokenTree::Ident(kw), ..) if kw == "use" => {
                    let public = is_public_before(&tokens, i);
                    let end = (i..tokens.len())
                        .find(|&j| matches!(&tokens[j], TokenTree::Punct(p) if p.as_char() == ';'))
                        .unwrap_or(tokens.len());
                    let mut leaves = Vec::new();
                    use_leaves(&tokens[i + 1..end], &mut Vec::new(), &mut leaves);
                    self.uses
                        .entry(module.clone())
                        .or_default()
                        .extend(leaves.into_iter().map(|(path, binds)| UseLeaf {
                            path,
                            binds,
                            public,
                        }));
                    i = end;
                    continue;
                }
                (TokenTree::Group(g), ..) => self.scan_declarations(module, g.stream(), children),
                _ => {}
            }
            i += 1;
        }
    }

    /// Every arrow between two files of the crate.
    fn arrows(&self) -> Arrows {
        let mut arrows = Arrows::new();
        for (module, tokens) in &self.tokens {
            let file = &self.files[module];
            let mut found = Vec::new();
            self.scan_paths(module, tokens.clone(), &mut found);
            for (to_module, name) in found {
                // A child may use what its ancestors hold: it is part of them.
                if module.starts_with(&to_module) {
                    continue;
                }
                let Some(to) = self.file_of(&to_module) else {
                    continue;
                };
                if to != file {
                    let names = arrows.entry(file.clone()).or_default();
                    names.entry(to.clone()).or_default().insert(name);
                }
            }
        }
        arrows
    }

    /// The file that holds `module` (an inline module is in its parent's file).
    fn file_of(&self, module: &[String]) -> Option<&PathBuf> {
        (0..=module.len())
            .rev()
            .find_map(|n| self.files.get(&module[..n]))
    }

    /// The modules that the paths in `tokens`, written in `module`, reach, each with the name
    /// taken from it.
    fn scan_paths(
        &self,
        module: &ModulePath,
        tokens: TokenStream,
        found: &mut Vec<(ModulePath, String)>,
    ) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Ident(kw) if kw == "mod" => {
                    if let (Some(TokenTree::Ident(name)), Some(TokenTree::Group(g))) =
                        (tokens.get(i + 1), tokens.get(i + 2))
                    {
                        let mut inner = module.clone();
                        inner.push(name.to_string());
                        self.scan_paths(&inner, g.stream(), found);
                        i += 3;
                        continue;
                    }
                }
                TokenTree::Ident(kw) if kw == "use" => {
                    let end = (i..tokens.len())
                        .find(|&j| matches!(&tokens[j], TokenTree::Punct(p) if p.as_char() == ';'))
                        .unwrap_or(tokens.len());
                    let mut leaves = Vec::new();
                    use_leaves(&tokens[i + 1..end], &mut Vec::new(), &mut leaves);
                    for (path, _) in leaves {
                        found.extend(self.resolve(module, &path, false, 0));
                    }
                    i = end;
                    continue;
                }
                TokenTree::Ident(first) => {
                    let (path, next) = path_at(&tokens, i);
                    if path.len() > 1 || first == "crate" {
                        let is_macro = matches!(tokens.get(next), Some(TokenTree::Punct(p)) if p.as_char() == '!');
                        found.extend(self.resolve(module, &path, is_macro, 0));
                        i = next;
                        continue;
                    }
                }
                TokenTree::Group(g) => self.scan_paths(module, g.stream(), found),
                _ => {}
            }
            i += 1;
        }
    }

    /// The module `path`, written in `module`, reaches and the name it takes there; None for
    /// paths outside the crate.
    fn resolve(
        &self,
        module: &ModulePath,
        path: &[String],
        is_macro: bool,
        depth: usize,
    ) -> Option<(ModulePath, String)> {
        let (first, rest) = path.split_first()?;
        let mut at: ModulePath = match first.as_str() {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => module[..module.len().checked_sub(1)?].to_vec(),
            name if self.is_module(&child(module, name)) => child(module, name),
            name => {
                // A module or item a `use` of this module brought in.
                let leaf = self.uses.get(module)?.iter().find(|u| u.binds == name)?;
                if depth > 8 || leaf.path.first() == Some(first) {
                    return None;
                }
                let mut whole = leaf.path.clone();
                whole.extend(rest.iter().cloned());
                return self.resolve(module, &whole, is_macro, depth + 1);
            }
        };
        let mut rest = rest.iter().peekable();
        while let Some(segment) = rest.peek() {
            match segment.as_str() {
                "super" => at = at[..at.len().checked_sub(1)?].to_vec(),
                "self" => {}
                name if self.is_module(&child(&at, name)) => at = child(&at, name),
                _ => break,
            }
            rest.next();
        }
        let Some(item) = rest.next() else {
            let name = at.last().cloned().unwrap_or_else(|| "crate".to_owned());
            return Some((at, name));
        };
        if is_macro {
            if let Some(defined) = self.macros.get(item) {
                return Some((defined.clone(), format!("{item}!")));
            }
        }
        // Through a re-export, to where the item is defined.
        let reexport = self
            .uses
            .get(&at)
            .and_then(|uses| uses.iter().find(|u| u.public && &u.binds == item));
        if let Some(leaf) = reexport.filter(|_| depth < 8) {
            if let Some(found) = self.resolve(&at, &leaf.path, is_macro, depth + 1) {
                return Some(found);
            }
        }
        Some((at, item.clone()))
    }

    fn is_module(&self, path: &[String]) -> bool {
        self.files.contains_key(path)
    }
}

fn child(module: &[String], name: &str) -> ModulePath {
    let mut path = module.to_vec();
    path.push(name.to_owned());
    path
}

/// Whether the `use` at `tokens[at]` is `pub` (in any of its forms).
fn is_public_before(tokens: &[TokenTree], at: usize) -> bool {
    let before = |n: usize| at.checked_sub(n).and_then(|i| tokens.get(i));
    match (before(2), before(1)) {
        (_, Some(TokenTree::Ident(kw))) => kw == "pub",
        (Some(TokenTree::Ident(kw)), Some(TokenTree::Group(g))) => {
            kw == "pub" && g.delimiter() == Delimiter::Parenthesis
        }
        _ => false,
    }
}

/// The path of idents joined by `::` that starts at `tokens[at]`, and the index after it.
fn path_at(tokens: &[TokenTree], at: usize) -> (Vec<String>, usize) {
    let mut path = Vec::new();
    let mut i = at;
    while let Some(TokenTree::Ident(ident)) = tokens.get(i) {
        path.push(ident.to_string());
        i += 1;
        if is_path_separator(tokens, i) && matches!(tokens.get(i + 2), Some(TokenTree::Ident(_))) {
            i += 2;
        } else {
            break;
        }
    }
    (path, i)
}

fn is_path_separator(tokens: &[TokenTree], at: usize) -> bool {
    matches!(
        (tokens.get(at), tokens.get(at + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':'
    )
}

/// The leaves of a `use` tree (`a::{b, c::d as e, f::*}`), each as its whole path and the
/// name it binds (`*` for a glob).
fn use_leaves(
    tokens: &[TokenTree],
    prefix: &mut Vec<String>,
    leaves: &mut Vec<(Vec<String>, String)>,
) {
    let mut i = 0;
    let depth = prefix.len();
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Ident(ident) if ident == "as" => {
                if let Some(TokenTree::Ident(alias)) = tokens.get(i + 1) {
                    if let Some(last) = leaves.last_mut() {
                        last.1 = alias.to_string();
                    }
                }
                i += 2;
                continue;
            }
            TokenTree::Ident(ident) => {
                prefix.push(ident.to_string());
                if !is_path_separator(tokens, i + 1) {
                    let binds = match ident.to_string().as_str() {
                        "self" => prefix[prefix.len().saturating_sub(2)].clone(),
                        name => name.to_owned(),
                    };
                    let mut path = prefix.clone();
                    if path.last().is_some_and(|s| s == "self") {
                        path.pop();
                    }
                    leaves.push((path, binds));
                    prefix.truncate(depth);
                }
            }
            TokenTree::Punct(p) if p.as_char() == '*' => {
                leaves.push((prefix.clone(), "*".to_owned()));
                prefix.truncate(depth);
            }
            TokenTree::Punct(p) if p.as_char() == ',' => {
                prefix.truncate(depth);
                i += 1;
                continue;
            }
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                let mut inner_prefix = prefix.clone();
                use_leaves(&inner, &mut inner_prefix, leaves);
                prefix.truncate(depth);
            }
            _ => {}
        }
        i += 1;
    }
}

/// The circles of `arrows`: each strongly connected set of two or more files.
fn circles_of(arrows: &Arrows) -> Vec<Vec<PathBuf>> {
    let files: BTreeSet<&PathBuf> = arrows
        .iter()
        .flat_map(|(from, to)| std::iter::once(from).chain(to.keys()))
        .collect();
    let reaches = |from: &PathBuf| -> BTreeSet<PathBuf> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(file) = todo.pop() {
            for next in arrows.get(&file).into_iter().flat_map(|to| to.keys()) {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&PathBuf, BTreeSet<PathBuf>> =
        files.iter().map(|&f| (f, reaches(f))).collect();
    let mut circles: Vec<Vec<PathBuf>> = Vec::new();
    for &file in &files {
        if !reach[file].contains(file) || circles.iter().any(|c| c.contains(file)) {
            continue;
        }
        let circle = files
            .iter()
            .filter(|&&other| reach[file].contains(other) && reach[other].contains(file))
            .map(|&f| f.clone())
            .collect();
        circles.push(circle);
    }
    circles
}

fn print_circle(arrows: &Arrows, circle: &[PathBuf]) {
    println!("import circle of {} files:", circle.len());
    for from in circle {
        for (to, names) in arrows.get(from).into_iter().flatten() {
            if circle.contains(to) {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                println!(
                    "  {} -> {}: {}",
                    from.display(),
                    to.display(),
                    names.join(", ")
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate written into a fresh folder: (path, text) per file; `lib.rs` is its root.
    fn arrows(files: &[(&str, &str)]) -> Arrows {
        let dir = std::env::temp_dir().join(format!(
            "xtask-imports-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        for (path, text) in files {
            let file = dir.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }
        let arrows = arrows_of(&dir, &dir.join("lib.rs")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        arrows
    }

    fn circles(files: &[(&str, &str)]) -> Vec<Vec<String>> {
        circles_of(&arrows(files))
            .into_iter()
            .map(|c| c.iter().map(|p| p.display().to_string()).collect())
            .collect()
    }

    #[test]
    fn two_siblings_that_use_each_other_are_a_circle() {
        let found = circles(&[
            ("lib.rs", "mod a; mod b;"),
            ("a.rs", "use crate::b::B; pub struct A;"),
            ("b.rs", "pub struct B; fn f() -> crate::a::A { todo!() }"),
        ]);
        assert_eq!(found, vec![vec!["a.rs".to_owned(), "b.rs".to_owned()]]);
    }

    #[test]
    fn a_child_using_its_parent_is_no_circle_but_a_sibling_loop_through_it_is() {
        let parent_and_child = [
            ("lib.rs", "mod room;"),
            (
                "room/mod.rs",
                "mod part; pub use part::Part; pub struct Face;",
            ),
            ("room/part.rs", "use super::Face; pub struct Part;"),
        ];
        assert!(circles(&parent_and_child).is_empty());
        let through_an_error_type = [
            ("lib.rs", "mod error; mod room;"),
            ("error.rs", "pub enum Error { File(crate::room::Mistake) }"),
            ("room/mod.rs", "mod part; pub use part::Mistake;"),
            (
                "room/part.rs",
                "use crate::error::Error; pub struct Mistake;",
            ),
        ];
        assert_eq!(
            circles(&through_an_error_type),
            vec![vec!["error.rs".to_owned(), "room/part.rs".to_owned()]]
        );
    }

    #[test]
    fn re_exports_macros_and_paths_in_macro_bodies_lead_to_the_defining_file() {
        let found = arrows(&[
            ("lib.rs", "mod out; mod run; mod user; pub use run::go;"),
            ("out.rs", "#[macro_export] macro_rules! say { () => {} }"),
            (
                "run.rs",
                "pub fn go() { select! { _ = x => crate::say!() } } // crate::user::f",
            ),
            ("user.rs", "fn f() { crate::go(); }"),
        ]);
        let files = |from: &str| -> Vec<&Path> {
            found[Path::new(from)]
                .keys()
                .map(PathBuf::as_path)
                .collect()
        };
        assert_eq!(
            files("run.rs"),
            [Path::new("out.rs")],
            "a comment is no arrow"
        );
        assert_eq!(files("user.rs"), [Path::new("run.rs")]);
    }
}
