//! `dmsctl export -o FILE`: the admin `Export` stream written to a file.
//!
//! The bytes go to a temporary file beside FILE (`.FILE.<pid>.part`), which is renamed to FILE
//! only once the master said the file is complete and it is on disk; a failure removes it and
//! leaves FILE as it was. On a terminal, one progress line on stderr (bars, bytes, rate) is
//! redrawn in place; at the end, the file, its bars and its size are printed on stdout.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dms_common::pb;

use crate::cli::ExportArgs;
use crate::client::{CliError, Client};
use crate::output::outln;

/// How often the progress line is redrawn at most.
const DRAW_EVERY: Duration = Duration::from_millis(200);

/// The formats, by the file extensions that imply them.
const EXTENSIONS: [(&str, &str); 6] = [
    ("csv", "csv"),
    ("json", "json"),
    ("jsonl", "jsonl"),
    ("ndjson", "jsonl"),
    ("xlsx", "xlsx"),
    ("parquet", "parquet"),
];

/// The format to ask for: `--format`, else the one FILE's extension names.
pub(crate) fn format_of(given: Option<&str>, file: &Path) -> Result<String, CliError> {
    if let Some(f) = given {
        return Ok(f.to_owned());
    }
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    EXTENSIONS
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, f)| (*f).to_owned())
        .ok_or_else(|| {
            CliError::usage(format!(
                "cannot tell the format from {:?}: give --format csv|json|jsonl|xlsx|parquet or a file ending in one of them",
                file.display().to_string()
            ))
        })
}

/// Removes the temporary file unless it was renamed into place.
struct PartFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Streams the export into `file`; returns the exit status.
pub(crate) async fn export(
    c: &Client,
    args: ExportArgs,
    format: String,
    file: &Path,
) -> Result<u8, CliError> {
    let name = file
        .file_name()
        .ok_or_else(|| CliError::usage(format!("-o {}: not a file name", file.display())))?
        .to_string_lossy()
        .into_owned();
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let req = pb::ExportRequest {
        format,
        symbols: args.symbols,
        interval: args.interval,
        start: args.start,
        end: args.end,
        compression: args.compression,
    };
    let mut stream = c
        .admin
        .clone()
        .export(req)
        .await
        .map_err(|s| c.error(&s))?
        .into_inner();
    let part = PartFile {
        path: dir.join(format!(".{name}.{}.part", std::process::id())),
        keep: false,
    };
    let cannot = |what: &str, e: std::io::Error| {
        CliError::failed(format!("cannot {what} {}: {e}", part.path.display()))
    };
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&part.path).map_err(|e| cannot("create", e))?,
    );
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let mut bytes = 0u64;
    let mut estimate = 0u64;
    let mut done = None;
    while let Some(chunk) = stream.message().await.map_err(|s| {
        progress.clear();
        c.error(&s)
    })? {
        if let Some(info) = &chunk.info {
            estimate = info.bars_estimate;
        }
        out.write_all(&chunk.data).map_err(|e| cannot("write", e))?;
        bytes += chunk.data.len() as u64;
        if chunk.done {
            done = Some(chunk.bars);
            break;
        }
        progress.show(chunk.bars, estimate, bytes);
    }
    progress.clear();
    let Some(bars) = done else {
        return Err(CliError::failed(format!(
            "the master ended the export before the end of the file; {} was not written",
            file.display()
        )));
    };
    let f = out
        .into_inner()
        .map_err(|e| cannot("write", e.into_error()))?;
    f.sync_all().map_err(|e| cannot("write", e))?;
    drop(f);
    std::fs::rename(&part.path, file).map_err(|e| {
        CliError::failed(format!(
            "cannot rename {} to {}: {e}",
            part.path.display(),
            file.display()
        ))
    })?;
    let mut part = part;
    part.keep = true;
    outln!("{}: {bars} bars, {}", file.display(), size(bytes));
    Ok(0)
}

/// `1.5 MiB`, `812 B`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The progress line on a terminal.
#[derive(Debug)]
struct Progress {
    terminal: bool,
    started: Instant,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    fn new(terminal: bool) -> Progress {
        Progress {
            terminal,
            started: Instant::now(),
            last: None,
            drawn: false,
        }
    }

    fn show(&mut self, bars: u64, estimate: u64, bytes: u64) {
        if !self.terminal || self.last.is_some_and(|t| t.elapsed() < DRAW_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let of = if estimate > 0 {
            format!(" of ≤{estimate}")
        } else {
            String::new()
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Kexporting: {bars}{of} bars, {} ({:.0} bars/s)",
            size(bytes),
            bars as f64 / secs
        );
        let _ = err.flush();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.drawn = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_the_option_or_the_extension() {
        let f = |given: Option<&str>, file: &str| format_of(given, Path::new(file));
        assert_eq!(f(None, "out/GOOG.parquet").unwrap(), "parquet");
        assert_eq!(f(None, "bars.NDJSON").unwrap(), "jsonl");
        assert_eq!(f(None, "bars.xlsx").unwrap(), "xlsx");
        assert_eq!(f(Some("csv"), "bars.txt").unwrap(), "csv");
        let e = f(None, "bars.txt").unwrap_err();
        assert_eq!(e.exit, 2);
        assert!(e.message.contains("--format"), "{}", e.message);
    }

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}
