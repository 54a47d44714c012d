//! `jwtgate completions SHELL` and `jwtgate man`: the shell completion
//! script and the manual pages, generated from the same clap definition
//! that parses the arguments, so they never fall behind a new flag.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for; the script goes to standard output.
    shell: Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Write jwtgate.1 and one page per subcommand (jwtgate-check.1, ...)
    /// into this directory, created if missing; without it, jwtgate.1 goes
    /// to standard output.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn completions(args: &CompletionsArgs, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    write_stdout(&script)
}

pub fn man(args: &ManArgs, command: clap::Command) -> anyhow::Result<ExitCode> {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let Some(dir) = &args.dir else {
        return write_stdout(&render(page_of(command))?);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_pages(command, dir)
        .with_context(|| format!("cannot write the pages into {}", dir.display()))?;
    outln!("man pages written to {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// `command`'s page and those of its subcommands, each in a file named
/// after its command line (`jwtgate-token-mint.1`).
fn write_pages(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir)?;
    }
    let page = page_of(command);
    std::fs::write(dir.join(page.get_filename()), render(page)?)
}

/// One page. Subcommands carry no version of their own, so every page's
/// footer names jwtgate's. The date is the day the page is written: an
/// empty one would leave `.TH` a field short, and man would take the
/// version for the date.
fn page_of(command: clap::Command) -> clap_mangen::Man {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    clap_mangen::Man::new(command)
        .date(&now[..10])
        .source(concat!("jwtgate ", env!("CARGO_PKG_VERSION")))
}

/// The page as roff in ASCII: help texts may hold characters such as `…`,
/// which roff takes as named glyphs (`\[u2026]`) in any encoding, where a
/// formatter reading the raw bytes would warn and drop them.
fn render(page: clap_mangen::Man) -> std::io::Result<Vec<u8>> {
    let mut roff = Vec::new();
    page.render(&mut roff)?;
    let mut ascii = String::with_capacity(roff.len());
    for c in String::from_utf8_lossy(&roff).chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            ascii.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    Ok(ascii.into_bytes())
}

/// All of `bytes` to standard output; a closed pipe surfaces as an error
/// `main` ends quietly on.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
