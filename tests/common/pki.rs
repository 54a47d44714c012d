//! A test PKI made with `openssl` at test time: P-256 keys, CAs and the
//! certificates they sign, in a temporary directory of the test's own.
//! `openssl` is required (scripts/test installs it): without it a test
//! fails, it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The extensions of a CA certificate: it signs certificates, nothing else.
pub const CA: &[&str] = &[
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign,cRLSign",
];

/// One certificate to make: its file names in the [`Pki`]'s directory, the
/// subject's common name, how long it is valid and its X.509v3 extensions
/// (a `name=value` each).
#[derive(Clone, Copy)]
pub struct Cert<'a> {
    pub key: &'a str,
    pub cert: &'a str,
    pub cn: &'a str,
    pub days: u32,
    pub extensions: &'a [&'a str],
}

/// The directory the certificates are made in; removed when dropped.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("PKI tempdir"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `openssl` in the directory; a failure panics with what it said.
    pub fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run openssl ({e}); scripts/test installs it (Debian package openssl)"
                )
            });
        assert!(
            output.status.success(),
            "openssl {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `cert.key` and, signed with it, `cert.cert`.
    pub fn self_signed(&self, cert: &Cert) {
        let subject = format!("/CN={}", cert.cn);
        let days = cert.days.to_string();
        let mut args = vec!["req", "-x509"];
        args.extend(NEW_KEY);
        args.extend(["-keyout", cert.key, "-out", cert.cert]);
        args.extend(["-days", &days, "-subj", &subject]);
        for extension in cert.extensions {
            args.extend(["-addext", extension]);
        }
        self.openssl(&args);
    }

    /// `cert.key` and `cert.cert` signed by the CA `ca` (made before), with
    /// serial number `serial` (hex), or one openssl picks.
    pub fn signed(&self, cert: &Cert, ca: &Cert, serial: Option<&str>) {
        let request = format!("{}.csr", cert.cert);
        let extensions = format!("{}.ext", cert.cert);
        let mut lines = cert.extensions.join("\n");
        lines.push('\n');
        std::fs::write(self.path(&extensions), lines).expect("write the extensions");
        let subject = format!("/CN={}", cert.cn);
        let mut args = vec!["req"];
        args.extend(NEW_KEY);
        args.extend(["-keyout", cert.key, "-out", &request, "-subj", &subject]);
        self.openssl(&args);

        let serial = serial.map(|hex| format!("0x{hex}"));
        let days = cert.days.to_string();
        let mut args = vec!["x509", "-req", "-in", &request];
        args.extend(["-CA", ca.cert, "-CAkey", ca.key]);
        match &serial {
            Some(serial) => args.extend(["-set_serial", serial]),
            None => args.push("-CAcreateserial"),
        }
        args.extend(["-days", &days, "-extfile", &extensions, "-out", cert.cert]);
        self.openssl(&args);
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A new P-256 key, unencrypted.
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];
