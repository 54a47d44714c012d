//! The revocation list on local disk, so a restart (even while Redis is
//! down) enforces what was known before it.
//!
//! `revocations.jsonl` is an append log: one JSON [`Change`] a line, each
//! batch flushed with `fdatasync` before the change is acknowledged. It is
//! compacted into the live entries alone (a temporary file, fsync, rename,
//! fsync of the directory: never a half-written list) at startup, when
//! lapsed `jti` entries were swept, and when dead lines outnumber live
//! entries. `pending.jsonl` holds the changes made while Redis was
//! unreachable, replaced atomically whenever that queue changes. Files are
//! 0600 in a 0700 directory: the list names subjects.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::list::{Change, Entry};

pub const LOG_FILE: &str = "revocations.jsonl";
pub const PENDING_FILE: &str = "pending.jsonl";

#[derive(Debug, thiserror::Error)]
#[error("revocation.dir: cannot {action} {}: {source}", path.display())]
pub struct JournalError {
    action: &'static str,
    path: PathBuf,
    source: io::Error,
}

fn failed(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError {
        action,
        path,
        source,
    }
}

/// What the directory held at startup.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The log's changes, in order.
    pub changes: Vec<Change>,
    /// Changes not yet pushed to Redis.
    pub pending: Vec<Change>,
    /// Lines that were not a change (a write cut short by a crash): skipped.
    pub skipped: usize,
}

pub struct Journal {
    dir: PathBuf,
    log: File,
    /// Lines in the log, live or dead.
    lines: usize,
}

impl Journal {
    /// Opens (creating) the directory and reads what it holds.
    pub fn open(dir: &Path) -> Result<(Self, Loaded), JournalError> {
        create_private_dir(dir).map_err(failed("create", dir))?;
        let log_path = dir.join(LOG_FILE);
        let mut loaded = Loaded::default();
        let (changes, skipped) = read_changes(&log_path)?;
        let lines = changes.len() + skipped;
        loaded.changes = changes;
        loaded.skipped = skipped;
        let pending_path = dir.join(PENDING_FILE);
        let (pending, skipped) = read_changes(&pending_path)?;
        loaded.pending = pending;
        loaded.skipped += skipped;
        let log = open_append(&log_path)?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                log,
                lines,
            },
            loaded,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Appends `changes` and waits until they are on disk.
    pub fn append(&mut self, changes: &[Change]) -> Result<(), JournalError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut text = Vec::new();
        for change in changes {
            serde_json::to_writer(&mut text, change).expect("a change serializes");
            text.push(b'\n');
        }
        let path = self.dir.join(LOG_FILE);
        self.log
            .write_all(&text)
            .and_then(|()| self.log.sync_data())
            .map_err(failed("write", &path))?;
        self.lines += changes.len();
        Ok(())
    }

    /// Replaces the log with `entries` alone.
    pub fn compact(&mut self, entries: &[Entry]) -> Result<(), JournalError> {
        let changes: Vec<Change> = entries.iter().cloned().map(Change::Put).collect();
        let path = self.dir.join(LOG_FILE);
        write_atomically(&self.dir, LOG_FILE, &changes)?;
        self.log = open_append(&path)?;
        self.lines = entries.len();
        Ok(())
    }

    /// Replaces the queue of changes waiting for Redis.
    pub fn save_pending(&self, pending: &[Change]) -> Result<(), JournalError> {
        write_atomically(&self.dir, PENDING_FILE, pending)
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn open_append(path: &Path) -> Result<File, JournalError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(failed("open", path))
}

/// Every line that parses as a change; a missing file is an empty one.
fn read_changes(path: &Path) -> Result<(Vec<Change>, usize), JournalError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(error) => return Err(failed("read", path)(error)),
    };
    let mut changes = Vec::new();
    let mut skipped = 0;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(failed("read", path))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Change>(&line) {
            Ok(change) => changes.push(change),
            Err(_) => skipped += 1,
        }
    }
    Ok((changes, skipped))
}

fn write_atomically(dir: &Path, name: &str, changes: &[Change]) -> Result<(), JournalError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        let mut text = Vec::new();
        for change in changes {
            serde_json::to_writer(&mut text, change).expect("a change serializes");
            text.push(b'\n');
        }
        file.write_all(&text)?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        // The rename itself is durable once the directory is.
        File::open(dir)?.sync_all()
    };
    write().map_err(failed("write", &path))
}

#[cfg(test)]
mod tests {
    use super::super::list::Kind;
    use super::*;

    fn put(value: &str, at: i64) -> Change {
        Change::test_jti(value, at)
    }

    #[test]
    fn appended_changes_are_read_back_and_compaction_keeps_only_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let (mut journal, loaded) = Journal::open(&path).unwrap();
        assert!(loaded.changes.is_empty());
        journal.append(&[put("a", 1), put("b", 2)]).unwrap();
        let lift = Change::Lift {
            kind: Kind::Jti,
            iss: "https://i".into(),
            value: "a".into(),
        };
        journal.append(std::slice::from_ref(&lift)).unwrap();
        drop(journal);

        let (mut journal, loaded) = Journal::open(&path).unwrap();
        assert_eq!(loaded.changes, vec![put("a", 1), put("b", 2), lift]);
        assert_eq!(journal.lines(), 3);
        let Change::Put(b) = put("b", 2) else {
            unreachable!()
        };
        journal.compact(std::slice::from_ref(&b)).unwrap();
        journal.append(&[put("c", 3)]).unwrap();
        let text = fs::read_to_string(path.join(LOG_FILE)).unwrap();
        assert!(!text.contains("\"a\""), "{text}");
        assert_eq!(text.lines().count(), 2);

        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&path.join(LOG_FILE)), 0o600);
    }

    #[test]
    fn a_torn_last_line_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        journal.append(&[put("a", 1)]).unwrap();
        drop(journal);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        file.write_all(br#"{"op":"put","kind":"jti","iss":"#)
            .unwrap();
        let (_, loaded) = Journal::open(dir.path()).unwrap();
        assert_eq!(loaded.changes, vec![put("a", 1)]);
        assert_eq!(loaded.skipped, 1);
    }

    #[test]
    fn pending_changes_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        journal.save_pending(&[put("x", 9)]).unwrap();
        journal.save_pending(&[put("x", 9), put("y", 9)]).unwrap();
        let (_, loaded) = Journal::open(dir.path()).unwrap();
        assert_eq!(loaded.pending, vec![put("x", 9), put("y", 9)]);
    }
}
