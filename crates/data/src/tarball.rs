//! Reading selected members of a gzipped tarball into memory.

use std::io::Read;
use std::path::Path;

use crate::DataError;

/// `(member path, bytes)` for every regular file whose path satisfies `keep`, in archive order.
pub fn read_members(
    path: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Vec<u8>)>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    read_from(file, path, keep)
}

/// The same, from a gzipped tarball held in memory (`origin` names it in errors).
pub fn read_members_from_bytes(
    bytes: &[u8],
    origin: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Vec<u8>)>, DataError> {
    read_from(bytes, origin, keep)
}

fn read_from(
    reader: impl Read,
    origin: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Vec<u8>)>, DataError> {
    let bad = |e: std::io::Error| DataError::Format {
        path: origin.to_path_buf(),
        reason: format!("not a readable .tar.gz: {e}"),
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut out = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(bad)?.to_string_lossy().to_string();
        if keep(&name) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(bad)?;
            out.push((name, bytes));
        }
    }
    Ok(out)
}
