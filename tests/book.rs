//! The documentation: a short README, and a book in `docs/` that `mdbook`
//! builds and whose every link and fragment resolves.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test (it installs the book's tools) first",
        path.display()
    );
    path
}

/// Runs `command`; panics with what it printed unless its exit status is `expect_success`.
fn run(command: &mut Command, expect_success: bool) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.status.success(),
        expect_success,
        "{command:?} exited with {}:\n{printed}",
        output.status
    );
    printed
}

fn build_book(into: &Path) {
    run(
        Command::new(installed(common::cargo_tool_bin("mdbook")))
            .arg("build")
            .arg(repo().join("docs"))
            .arg("--dest-dir")
            .arg(into),
        true,
    );
}

/// lychee, offline: relative links, and `#fragment`s against the target's ids.
fn link_check(inputs: &[PathBuf], root: &Path) -> Command {
    let mut lychee = Command::new(installed(common::venv_bin("lychee")));
    lychee
        .args(["--offline", "--include-fragments", "--no-progress"])
        .arg("--root-dir")
        .arg(root)
        .args(inputs);
    lychee
}

/// Every Markdown file of the repository outside the book (READMEs of
/// folders), whose relative links must resolve too; not the vendored
/// crates' own.
fn markdown_outside_the_book() -> Vec<PathBuf> {
    let mut found = common::repository_files(&["*.md"]);
    found.retain(|path| {
        !path.starts_with(repo().join("docs")) && !path.starts_with(repo().join("vendor/h2"))
    });
    found
}

#[test]
fn the_book_builds_and_every_link_in_it_and_the_readmes_resolves() {
    let out = tempfile::tempdir().expect("temp dir");
    build_book(out.path());
    let pages = out.path().join("reference/configuration.html");
    assert!(pages.is_file(), "the book has no configuration reference");

    let mut inputs = vec![out.path().to_path_buf()];
    inputs.extend(markdown_outside_the_book());
    assert!(inputs.iter().any(|p| p.ends_with("README.md")));
    run(&mut link_check(&inputs, out.path()), true);
}

#[test]
fn the_link_check_finds_a_broken_fragment_and_a_missing_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("target.html"),
        r#"<html><body><h1 id="here">here</h1></body></html>"#,
    )
    .unwrap();
    for (name, link) in [
        ("fragment.html", "target.html#not-here"),
        ("page.html", "missing.html"),
    ] {
        let page = dir.path().join(name);
        std::fs::write(
            &page,
            format!(r#"<html><body><a href="{link}">x</a></body></html>"#),
        )
        .unwrap();
        let printed = run(&mut link_check(&[page], dir.path()), false);
        assert!(
            printed.contains(link.split('#').next().unwrap()),
            "{printed}"
        );
    }
    let good = dir.path().join("good.html");
    std::fs::write(&good, r##"<a href="target.html#here">x</a>"##).unwrap();
    run(&mut link_check(&[good], dir.path()), true);
}

/// A chapter not in SUMMARY.md would be left out of the book without a word.
#[test]
fn every_page_in_docs_is_a_chapter_of_the_book() {
    let summary = std::fs::read_to_string(repo().join("docs/SUMMARY.md")).expect("SUMMARY.md");
    let mut folders = vec![repo().join("docs")];
    let mut orphans = Vec::new();
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read docs") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let relative = path.strip_prefix(repo().join("docs")).unwrap();
            let relative = relative.to_string_lossy().into_owned();
            if relative.ends_with(".md")
                && relative != "SUMMARY.md"
                && !summary.contains(&format!("]({relative})"))
            {
                orphans.push(relative);
            }
        }
    }
    assert!(
        orphans.is_empty(),
        "pages missing from docs/SUMMARY.md: {orphans:?}"
    );
}

/// The README stays a front page: what jwtgate is, run it, test it, one
/// example, where to read on.
#[test]
fn the_readme_is_short_and_points_to_the_book() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let sections: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .collect();
    assert_eq!(
        sections,
        ["Run it", "Test it", "One example", "Read on"],
        "README sections"
    );
    let lines = readme.lines().count();
    assert!(
        lines <= 150,
        "README.md has {lines} lines; the rest belongs in docs/"
    );
    assert!(readme.contains("(docs/SUMMARY.md)"));
}
