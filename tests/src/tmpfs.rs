//! `Tmpfs`: a small tmpfs mounted at a directory of a test, a disk that can be filled to the
//! last byte and emptied again; unmounted when dropped. Mounting needs root (the test command
//! runs as root); anything else fails the test with the reason.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A mounted tmpfs.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes` at `path` (created if needed).
    pub fn mount(path: &Path, size_bytes: u64) -> Result<Tmpfs> {
        std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(path)
            .output()
            .context("run mount")?;
        if !out.status.success() {
            bail!(
                "cannot mount a tmpfs at {} (this test needs root): {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a filler file until the filesystem has no byte left; returns its path.
    pub fn fill(&self) -> Result<PathBuf> {
        let filler = self.path.join("filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .with_context(|| format!("open {}", filler.display()))?;
        for chunk in [1 << 16, 4096, 512, 1] {
            let block = vec![0u8; chunk];
            while f.write_all(&block).is_ok() {}
            // A failed write may have left part of the block; the next size takes what is left.
            let _ = f.flush();
        }
        Ok(filler)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon still holding a file in it must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
