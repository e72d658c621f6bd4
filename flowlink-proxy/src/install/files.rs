//! Backups and atomic replacement of configuration files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::InstallError;

/// `yyyymmddThhmmssZ`, UTC.
pub(crate) fn utc_stamp() -> Result<String, InstallError> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .map_err(|e| InstallError::Clock(e.to_string()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Create a new file that nobody else can read while we fill it, then give it
/// the original's permissions (and, best effort, owner).
fn create_like(path: &Path, original: &fs::Metadata) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Succeeds when we already own it or run as root; otherwise the file
        // simply stays ours, which is what a non-root user gets anyway.
        let _ = std::os::unix::fs::fchown(&file, Some(original.uid()), Some(original.gid()));
    }
    Ok(file)
}

/// Write `bytes` to `<file>.flowlink-backup-<stamp>` (or `…-<stamp>-N` if that
/// name is taken) with the original's permissions; returns the backup path.
pub(crate) fn backup(
    real: &Path,
    bytes: &[u8],
    meta: &fs::Metadata,
    stamp: &str,
) -> Result<PathBuf, InstallError> {
    let base = format!(".flowlink-backup-{stamp}");
    for n in 1..1000 {
        let suffix = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let path = with_suffix(real, &suffix);
        let mut file = match create_like(&path, meta) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(InstallError::Backup { path, source }),
        };
        let result = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::set_permissions(&path, meta.permissions()));
        return match result {
            Ok(()) => Ok(path),
            Err(source) => {
                let _ = fs::remove_file(&path);
                Err(InstallError::Backup { path, source })
            }
        };
    }
    Err(InstallError::Backup {
        path: with_suffix(real, &base),
        source: io::Error::new(io::ErrorKind::AlreadyExists, "too many backups this second"),
    })
}

/// Replace `real` with `new` atomically (temp file in the same directory, then
/// rename), keeping the original's permissions. Refuses if the file no longer
/// holds `expected` (another program wrote it while we were working).
pub(crate) fn replace_atomically(
    real: &Path,
    expected: &[u8],
    new: &[u8],
    meta: &fs::Metadata,
) -> Result<(), InstallError> {
    let write_err = |source| InstallError::Write {
        path: real.to_path_buf(),
        source,
    };
    let mut tmp = None;
    for n in 0..1000u32 {
        let candidate = with_suffix(real, &format!(".flowlink-tmp-{}-{n}", std::process::id()));
        match create_like(&candidate, meta) {
            Ok(f) => {
                tmp = Some((candidate, f));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(write_err(e)),
        }
    }
    let Some((tmp_path, mut file)) = tmp else {
        return Err(write_err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "could not pick a temporary file name",
        )));
    };
    let result = (|| -> Result<(), InstallError> {
        file.write_all(new)
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::set_permissions(&tmp_path, meta.permissions()))
            .map_err(write_err)?;
        drop(file);
        let now = fs::read(real).map_err(write_err)?;
        if now != expected {
            return Err(InstallError::ChangedMeanwhile {
                path: real.to_path_buf(),
            });
        }
        fs::rename(&tmp_path, real).map_err(write_err)?;
        #[cfg(unix)]
        if let Some(dir) = real.parent() {
            // Make the rename durable; failure here does not undo it.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}
