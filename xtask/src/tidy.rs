//! The tidy check: rules about the tree that no compiler enforces, run first by
//! `cargo xtask test` (and alone by `cargo xtask tidy`).
//!
//! - every `.rs` file starts with a `//!` comment saying what it is for;
//! - no file under `crates/*/src` is longer than [`MAX_SOURCE_LINES`];
//! - no test is switched off with an `ignore` attribute;
//! - every behaviour case in `tests/src/behaviour/*.rs` is registered in `behaviour_suite!`,
//!   so that each harness really runs it;
//! - every metric name the code uses is in the metrics table of `docs/operations.md`;
//! - every code name quoted in `docs/architecture.md` exists in the code.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// Longest a source file under `crates/*/src` may be: split a module by concern before this.
pub(crate) const MAX_SOURCE_LINES: usize = 600;

/// The folders whose `.rs` files are checked, relative to the project root.
const SOURCE_ROOTS: &[&str] = &["crates", "tests", "xtask"];

/// One Rust source file: its path relative to the root, with `/` separators, and its text.
struct SourceFile {
    path: String,
    text: String,
}

/// Runs every rule against the tree at `root`; the error lists every problem found.
pub(crate) fn check(root: &Path) -> Result<(), String> {
    let files = read_sources(root)?;
    let read =
        |path: &str| fs::read_to_string(root.join(path)).map_err(|e| format!("cannot read {path}: {e}"));
    let mut problems = Vec::new();
    module_docs(&files, &mut problems);
    file_lengths(&files, &mut problems);
    no_ignored_tests(&files, &mut problems);
    behaviour_cases_registered(&files, &mut problems);
    metrics_documented(&files, &read("docs/operations.md")?, &mut problems);
    architecture_names_exist(root, &files, &read("docs/architecture.md")?, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} tidy problem(s):\n  - {}", problems.len(), problems.join("\n  - ")))
    }
}

fn read_sources(root: &Path) -> Result<Vec<SourceFile>, String> {
    let mut paths = Vec::new();
    for dir in SOURCE_ROOTS {
        collect_rs(&root.join(dir), &mut paths)?;
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text =
                fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let path =
                relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            Ok(SourceFile { path, text })
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                collect_rs(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn module_docs(files: &[SourceFile], problems: &mut Vec<String>) {
    for file in files {
        if !file.text.starts_with("//!") {
            problems
                .push(format!("{}: does not start with a `//!` comment saying what it is for", file.path));
        }
    }
}

fn file_lengths(files: &[SourceFile], problems: &mut Vec<String>) {
    for file in files.iter().filter(|f| is_crate_source(&f.path)) {
        let lines = file.text.lines().count();
        if lines > MAX_SOURCE_LINES {
            problems
                .push(format!("{}: {lines} lines, over {MAX_SOURCE_LINES}: split it by concern", file.path));
        }
    }
}

/// Whether `path` is library or binary source of a crate (`crates/NAME/src/...`).
fn is_crate_source(path: &str) -> bool {
    let mut parts = path.split('/');
    parts.next() == Some("crates") && parts.next().is_some() && parts.next() == Some("src")
}

fn no_ignored_tests(files: &[SourceFile], problems: &mut Vec<String>) {
    // Spelled in two pieces so that this file does not match itself.
    let attribute = format!("#[{}", "ignore");
    for file in files {
        for (n, line) in file.text.lines().enumerate() {
            if line.trim_start().starts_with(&attribute) {
                problems.push(format!(
                    "{}:{}: a test is switched off; fix it or delete it",
                    file.path,
                    n + 1
                ));
            }
        }
    }
}

fn behaviour_cases_registered(files: &[SourceFile], problems: &mut Vec<String>) {
    let Some(suite) = files.iter().find(|f| f.path == "tests/src/lib.rs") else {
        return;
    };
    let Some(start) = suite.text.find("macro_rules! behaviour_suite") else {
        problems.push("tests/src/lib.rs: no `behaviour_suite!` macro".to_owned());
        return;
    };
    let body = &suite.text[start..];
    let body = &body[..body[1..].find("macro_rules!").map_or(body.len(), |end| end + 1)];
    for file in files {
        let Some(module) = file.path.strip_prefix("tests/src/behaviour/").and_then(|m| m.strip_suffix(".rs"))
        else {
            continue;
        };
        if module == "mod" {
            continue;
        }
        let registered = registered_cases(body, module);
        for case in behaviour_cases(&file.text) {
            if !registered.contains(case) {
                problems.push(format!(
                    "{}: behaviour case `{case}` is not listed under `{module}` in `behaviour_suite!` (tests/src/lib.rs)",
                    file.path
                ));
            }
        }
    }
}

/// The names of `pub async fn NAME<H: Harness>()` cases in a behaviour module.
fn behaviour_cases(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| {
        let rest = line.trim_start().strip_prefix("pub async fn ")?;
        let (name, generics) = rest.split_once('<')?;
        generics.starts_with("H: Harness>").then_some(name.trim())
    })
}

/// The words listed in `MODULE { ... }` inside the suite macro's body.
fn registered_cases<'a>(body: &'a str, module: &str) -> BTreeSet<&'a str> {
    let opening = format!("{module} {{");
    let Some(start) = body.find(&opening) else {
        return BTreeSet::new();
    };
    let block = &body[start + opening.len()..];
    let block = &block[..block.find('}').unwrap_or(block.len())];
    identifiers(block).collect()
}

fn metrics_documented(files: &[SourceFile], operations_doc: &str, problems: &mut Vec<String>) {
    let mut names = BTreeSet::new();
    for file in files.iter().filter(|f| is_crate_source(&f.path)) {
        for literal in file.text.split('"').skip(1).step_by(2) {
            if literal.starts_with("roomkit_")
                && literal.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                names.insert((literal.to_owned(), file.path.clone()));
            }
        }
    }
    for (name, path) in names {
        let documented =
            operations_doc.contains(&format!("`{name}`")) || operations_doc.contains(&format!("`{name}{{"));
        if !documented {
            problems
                .push(format!("{path}: metric `{name}` is not in the metrics table of docs/operations.md"));
        }
    }
}

fn architecture_names_exist(root: &Path, files: &[SourceFile], doc: &str, problems: &mut Vec<String>) {
    let known = code_words(files);
    let mut fenced = false;
    for (n, line) in doc.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for span in line.split('`').skip(1).step_by(2) {
            for missing in missing_names(root, span, &known) {
                problems.push(format!(
                    "docs/architecture.md:{}: `{missing}` (in `{span}`) is not in the code",
                    n + 1
                ));
            }
        }
    }
}

/// The code names in one quoted span of the architecture doc that the code does not have.
fn missing_names(root: &Path, span: &str, known: &BTreeSet<String>) -> Vec<String> {
    if span.starts_with('-') || span.contains("://") {
        return Vec::new();
    }
    if span.ends_with(".rs") && !span.contains(' ') {
        let exists = root.join(span).exists()
            || known.contains(&format!("file:{}", span.rsplit('/').next().unwrap_or(span)));
        return if exists { Vec::new() } else { vec![span.to_owned()] };
    }
    if span.contains('/') {
        return Vec::new();
    }
    let mut missing = Vec::new();
    for path in code_paths(span) {
        let checked = path.contains("::") || path.split("::").any(is_code_name);
        if checked && path.split("::").any(|segment| !known.contains(segment)) {
            missing.push(path.to_owned());
        }
    }
    missing
}

/// Whether a word is unmistakably a code name rather than prose: `CamelCase`, `snake_case`
/// or `UPPER_SNAKE`.
fn is_code_name(word: &str) -> bool {
    let camel =
        word.starts_with(|c: char| c.is_ascii_uppercase()) && word.contains(|c: char| c.is_ascii_lowercase());
    let snake = word.contains('_') && word.trim_matches('_').len() > 1;
    camel || snake
}

/// Runs of identifiers joined by `::` in `text`, e.g. `Output::Store` or `poll_output`.
fn code_paths(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            loop {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let continues = text[i..].starts_with("::")
                    && text[i + 2..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
                if !continues {
                    break;
                }
                i += 2;
            }
            paths.push(&text[start..i]);
        } else {
            i += 1;
        }
    }
    paths
}

/// Every identifier in the code outside line comments, the `snake_case` wire name of every
/// `CamelCase` one (serde's `rename_all = "snake_case"`), and every file name (as `file:NAME`).
fn code_words(files: &[SourceFile]) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    for file in files {
        words.insert(format!("file:{}", file.path.rsplit('/').next().unwrap_or(&file.path)));
        for line in file.text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for word in identifiers(line) {
                if word.starts_with(|c: char| c.is_ascii_uppercase()) {
                    words.insert(snake_case(word));
                }
                words.insert(word.to_owned());
            }
        }
    }
    words
}

fn snake_case(camel: &str) -> String {
    let mut snake = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}

fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile { path: path.to_owned(), text: text.to_owned() }
    }

    fn problems(rule: impl Fn(&mut Vec<String>)) -> Vec<String> {
        let mut found = Vec::new();
        rule(&mut found);
        found
    }

    #[test]
    fn files_without_a_module_comment_are_named() {
        let files = [file("crates/a/src/lib.rs", "//! A.\n"), file("tests/b.rs", "use x;\n")];
        let found = problems(|p| module_docs(&files, p));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("tests/b.rs"), "{found:?}");
    }

    #[test]
    fn only_crate_sources_have_a_length_limit() {
        let long = "//! Long.\n".repeat(MAX_SOURCE_LINES + 1);
        let files = [file("crates/a/src/big.rs", &long), file("crates/a/tests/big.rs", &long)];
        let found = problems(|p| file_lengths(&files, p));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("crates/a/src/big.rs"), "{found:?}");
    }

    #[test]
    fn ignored_tests_are_found() {
        let text = format!("//! T.\n#[test]\n#[{}]\nfn t() {{}}\n", "ignore");
        let found = problems(|p| no_ignored_tests(&[file("tests/t.rs", &text)], p));
        assert_eq!(found, ["tests/t.rs:3: a test is switched off; fix it or delete it"]);
    }

    #[test]
    fn an_unregistered_behaviour_case_is_found() {
        let suite = "//! S.\nmacro_rules! behaviour_suite {\n room {\n a_case,\n }\n chat {\n }\n}\nmacro_rules! other {}\n";
        let cases = "//! R.\npub async fn a_case<H: Harness>() {}\npub async fn b_case<H: Harness>() {}\nfn helper() {}\n";
        let files = [file("tests/src/lib.rs", suite), file("tests/src/behaviour/room.rs", cases)];
        let found = problems(|p| behaviour_cases_registered(&files, p));
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("`b_case`"), "{found:?}");
    }

    #[test]
    fn undocumented_metrics_are_found() {
        let code = r#"//! M.
metrics::counter!("roomkit_known_total").increment(1);
metrics::gauge!("roomkit_new").set(1.0);
let crate_name = "roomkit-core";"#;
        let doc = "| `roomkit_known_total` | counter | known |\n";
        let found = problems(|p| metrics_documented(&[file("crates/s/src/m.rs", code)], doc, p));
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("`roomkit_new`"), "{found:?}");
    }

    #[test]
    fn stale_code_names_in_the_architecture_doc_are_found() {
        let code =
            "//! C.\npub struct RoomRegistry;\nimpl RoomRegistry { pub fn poll_output() {} }\n// GoneType\n";
        let doc = "The `RoomRegistry::poll_output` and `poll_output()` exist; `GoneType` and `RoomRegistry::close_all` do not.\n\
                   Prose in quotes is not checked: `members`, `host`, `--dev`, `ws://x/y`.\n\
                   ```\nGoneInsideAFence\n```\n";
        let found = problems(|p| {
            architecture_names_exist(Path::new("/nonexistent"), &[file("crates/c/src/lib.rs", code)], doc, p)
        });
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("`GoneType`") && found[1].contains("`RoomRegistry::close_all`"),
            "{found:?}"
        );
    }

    #[test]
    fn wire_names_of_variants_count_as_code() {
        let words =
            code_words(&[file("crates/p/src/model.rs", "//! M.\nenum EndReason { KickedByOtherDevice }\n")]);
        assert!(words.contains("kicked_by_other_device") && words.contains("EndReason"));
    }

    #[test]
    fn code_paths_split_on_punctuation() {
        assert_eq!(code_paths("Output::Store(StoreOp) x.y"), ["Output::Store", "StoreOp", "x", "y"]);
        assert_eq!(code_paths("Arc<Vec<ConnId>>"), ["Arc", "Vec", "ConnId"]);
    }
}
