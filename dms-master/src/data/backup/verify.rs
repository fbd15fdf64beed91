//! Verifying a backup against its manifest: every file listed is there with its size and
//! SHA-256, and every series file decodes to the count, first and last bar and digest the
//! manifest gives. Each problem names the file.

use std::path::Path;

use dms_common::store::digest::Digest;
use serde::{Deserialize, Serialize};

use super::store::read_series_file;
use super::{Manifest, file_sha256};

/// What a verify found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyReport {
    pub backup: String,
    pub files_checked: u64,
    pub series_checked: u64,
    pub bars_checked: u64,
    /// One line per problem, naming the file.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks one file's size and SHA-256 against the manifest; None when they match.
fn check_file(dir: &Path, name: &str, bytes: u64, sha256: &str) -> Option<String> {
    match file_sha256(&dir.join(name)) {
        Err(e) => Some(format!("{name}: {e}")),
        Ok((_, n)) if n != bytes => Some(format!(
            "{name}: {n} bytes, the manifest says {bytes} (the file is damaged)"
        )),
        Ok((sha, _)) if sha != sha256 => Some(format!(
            "{name}: SHA-256 {sha} differs from the manifest's {sha256} (the file is damaged)"
        )),
        Ok(_) => None,
    }
}

/// Checks every file of the backup in `dir` against `manifest`; `decode` also reads every
/// series file and compares its bars with the manifest's count and digest. Calls `progress`
/// with the files checked so far.
pub fn verify(
    dir: &Path,
    manifest: &Manifest,
    decode: bool,
    mut progress: impl FnMut(u64, u64),
) -> VerifyReport {
    let mut report = VerifyReport {
        backup: manifest.name.clone(),
        ..VerifyReport::default()
    };
    let total = (manifest.files.len() + manifest.series.len()) as u64;
    for f in &manifest.files {
        report.files_checked += 1;
        if let Some(p) = check_file(dir, &f.name, f.bytes, &f.sha256) {
            report.problems.push(p);
        }
        progress(report.files_checked, total);
    }
    for s in &manifest.series {
        report.files_checked += 1;
        report.series_checked += 1;
        if let Some(p) = check_file(dir, &s.file, s.bytes, &s.sha256) {
            report.problems.push(p);
        } else if decode {
            match read_series_file(&dir.join(&s.file)) {
                Err(e) => report.problems.push(format!("{}: {e}", s.file)),
                Ok(bars) => {
                    let mut digest = Digest::default();
                    for b in &bars {
                        digest.add(b);
                    }
                    report.bars_checked += digest.count;
                    if digest.count != s.bars || digest.hash_hex() != s.digest {
                        report.problems.push(format!(
                            "{}: {} bars with digest {}, the manifest says {} bars with digest {}",
                            s.file,
                            digest.count,
                            digest.hash_hex(),
                            s.bars,
                            s.digest
                        ));
                    }
                }
            }
        }
        progress(report.files_checked, total);
    }
    report
}
