//! The Markdown documents point only at what exists: every relative link of
//! the README and of `docs/`, and every repository path that
//! `docs/ARCHITECTURE.md` names, so the code map cannot go stale unnoticed.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn documents() -> Vec<String> {
    let mut documents = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(Path::new(ROOT).join("docs")).expect("docs/") {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            documents.push(format!("docs/{name}"));
        }
    }
    documents
}

/// The targets of `[text](target)` links that are not URLs or anchors.
fn relative_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split('#').next().unwrap_or_default().to_string())
        .filter(|target| !target.is_empty() && !target.contains("://"))
        .collect()
}

/// Backquoted repository paths, as the code map writes them: `src/...`.
fn named_paths(text: &str) -> Vec<String> {
    const TOP: [&str; 8] = [
        "src/",
        "tests/",
        "loadtest/",
        "docs/",
        "config/",
        "scripts/",
        ".ci/",
        "Cargo.toml",
    ];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| TOP.iter().any(|top| quoted.starts_with(top)))
        .filter(|quoted| !quoted.contains(['*', ' ', '{', '<']))
        .map(|quoted| quoted.trim_end_matches(['/', ':', ',']).to_string())
        .collect()
}

#[test]
fn every_relative_link_and_every_path_the_code_map_names_exists() {
    let documents = documents();
    assert!(
        documents.iter().any(|d| d == "docs/ARCHITECTURE.md"),
        "{documents:?}"
    );
    let mut missing = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(Path::new(ROOT).join(document)).unwrap();
        let folder = Path::new(document).parent().unwrap();
        for link in relative_links(&text) {
            if !Path::new(ROOT).join(folder).join(&link).exists() {
                missing.push(format!("{document}: link {link}"));
            }
        }
        if document == "docs/ARCHITECTURE.md" {
            let paths = named_paths(&text);
            assert!(paths.len() > 20, "the code map names files: {paths:?}");
            for path in paths {
                if !Path::new(ROOT).join(&path).exists() {
                    missing.push(format!("{document}: path {path}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "stale: {missing:#?}");
}
