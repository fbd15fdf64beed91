//! [`FileImportConfig`]: the `file_import:` section, where files named by path may be read from
//! and how large an upload may be.

use std::path::PathBuf;

use dms_common::config::ByteSize;
use serde::{Deserialize, Serialize};

/// File imports (`POST /api/data/import-file`, `dmsctl import`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileImportConfig {
    /// Directories whose files an import may name by `path` (on the master's machine);
    /// checked after symlinks and `..` are resolved. Empty (the default): `path=` imports are
    /// refused and only uploads are taken.
    #[serde(default)]
    pub allowed_dirs: Vec<PathBuf>,
    /// The largest upload taken (413 beyond it).
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: ByteSize,
    /// Space that must stay free on the disk of the uploads directory: an upload that would
    /// leave less is refused (507) before and while it is written.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: ByteSize,
}

fn default_max_upload_bytes() -> ByteSize {
    ByteSize(2 << 30)
}

fn default_min_free_bytes() -> ByteSize {
    ByteSize(1 << 30)
}

impl Default for FileImportConfig {
    fn default() -> Self {
        FileImportConfig {
            allowed_dirs: Vec::new(),
            max_upload_bytes: default_max_upload_bytes(),
            min_free_bytes: default_min_free_bytes(),
        }
    }
}
