//! `jwtgate completions` and `jwtgate man`, used as a shell and man use
//! them: the bash script sourced in a real bash completes subcommands and
//! flags; every page renders with groff and passes mandoc's lint, and
//! together they name every subcommand.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

fn jwtgate(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run jwtgate {args:?}: {e}"));
    assert!(
        output.status.success(),
        "jwtgate {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `tool args`, which must be installed (scripts/test installs it).
fn run(tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is missing ({e}): run scripts/test, which installs it"))
}

/// What bash offers for the command line `words` (the last one being
/// completed), through the function the script registers for `jwtgate`.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        r#"source {script}
spec=$(complete -p jwtgate) || exit 3
function=${{spec#*-F }}; function=${{function%% *}}
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
"$function" jwtgate "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        script = script.display(),
        words = words.join(" "),
    );
    let output = run("bash", &["--norc", "--noprofile", "-c", &program]);
    assert!(
        output.status.success(),
        "bash: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("jwtgate.bash");
    std::fs::write(&script, jwtgate(&["completions", "bash"]).stdout).unwrap();

    assert_eq!(bash_completes(&script, &["jwtgate", "to"]), ["token"]);
    assert_eq!(bash_completes(&script, &["jwtgate", "che"]), ["check"]);
    assert_eq!(
        bash_completes(&script, &["jwtgate", "check", "--ro"]),
        ["--root"]
    );
    let health = bash_completes(&script, &["jwtgate", "health", "--"]);
    for flag in ["--admin", "--live", "--timeout"] {
        assert!(health.iter().any(|f| f == flag), "{flag}: {health:?}");
    }
    let mint = bash_completes(&script, &["jwtgate", "token", "mint", "--ki"]);
    assert_eq!(mint, ["--kid"]);
}

#[test]
fn every_shell_gets_a_script_naming_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = String::from_utf8(jwtgate(&["completions", shell]).stdout).unwrap();
        for subcommand in ["check", "token", "health", "completions", "man"] {
            assert!(script.contains(subcommand), "{shell}: no {subcommand}");
        }
    }
}

/// The subcommands `jwtgate --help` lists, `help` aside.
fn subcommands() -> BTreeSet<String> {
    let help = String::from_utf8(jwtgate(&["--help"]).stdout).unwrap();
    let commands = help
        .split("Commands:\n")
        .nth(1)
        .expect("--help lists commands");
    commands
        .lines()
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn man_pages_render_and_name_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let dir_arg = out.to_str().unwrap();
    jwtgate(&["man", "--dir", dir_arg]);

    let subcommands = subcommands();
    assert!(subcommands.contains("health"), "{subcommands:?}");
    let page = |name: &str| out.join(format!("{name}.1"));
    let main_page = page("jwtgate");
    let mut pages = vec![main_page.clone()];
    pages.extend(subcommands.iter().map(|s| page(&format!("jwtgate-{s}"))));
    pages.push(page("jwtgate-token-mint"));
    for page in &pages {
        let path = page.to_str().unwrap();
        assert!(page.is_file(), "no {path}");
        // Valid roff: groff warns about nothing (-ww: every warning), and
        // mandoc's lint finds no error.
        let groff = run("groff", &["-man", "-ww", "-z", path]);
        assert!(groff.status.success(), "groff {path}: {groff:?}");
        assert_eq!(String::from_utf8_lossy(&groff.stderr), "", "groff {path}");
        let lint = run("mandoc", &["-T", "lint", "-W", "error", path]);
        assert!(lint.status.success(), "mandoc {path}: {lint:?}");
    }

    // What a reader sees: man renders the main page, naming every
    // subcommand's page, and its synopsis.
    let rendered = run("man", &["-l", "-P", "cat", main_page.to_str().unwrap()]);
    assert!(rendered.status.success(), "{rendered:?}");
    let text = String::from_utf8(rendered.stdout).unwrap();
    assert!(text.contains("SYNOPSIS"), "{text}");
    for subcommand in &subcommands {
        assert!(
            text.contains(&format!("jwtgate-{subcommand}(1)")),
            "jwtgate.1 does not name {subcommand}:\n{text}"
        );
    }

    // Without --dir, the main page goes to standard output.
    let stdout = String::from_utf8(jwtgate(&["man"]).stdout).unwrap();
    assert!(stdout.contains("\n.TH jwtgate 1 "), "{stdout}");
    for subcommand in &subcommands {
        assert!(
            stdout.contains(&format!("jwtgate\\-{subcommand}")),
            "{subcommand}"
        );
    }
}
