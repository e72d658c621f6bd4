//! The private directory injected files live in: `flowlink-secrets-<pid>-<random>`, mode 0700,
//! under `$XDG_RUNTIME_DIR` (a per-user tmpfs on most desktops: never on disk) or else the
//! system temporary directory. Each file is written 0600. The directory is removed when the
//! proxy exits (and by `Drop`); directories of proxies that died without cleaning up (`kill -9`)
//! are swept by the next proxy that starts.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::link::state::process_alive;

const PREFIX: &str = "flowlink-secrets-";

/// Where private directories are made.
pub fn base_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// A private directory, removed on drop.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// Creates a new 0700 directory for this process under `base`.
    pub fn create(base: &Path) -> std::io::Result<PrivateDir> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = base.join(format!("{PREFIX}{}-{suffix}", std::process::id()));
        // `create` (not `recursive`): fails if anything, even a symlink, is already there.
        DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` (a plain file name) with `value`, mode 0600, replacing an earlier file.
    pub fn write(&self, name: &str, value: &[u8]) -> std::io::Result<PathBuf> {
        if name.is_empty() || name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{name}` is not a plain file name"),
            ));
        }
        let path = self.path.join(name);
        // A new inode every time: whoever had the old file open keeps the old value, and a
        // planted symlink is removed rather than followed.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)?;
        f.write_all(value)?;
        f.sync_all()?;
        Ok(path)
    }

    /// Removes the directory and everything in it.
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!(
                "flowlink-proxy: could not remove the secrets directory {}: {e}; remove it by hand",
                self.path.display()
            );
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes private directories under `base` whose proxy process is gone and that belong to this
/// user. Returns how many were removed.
pub fn sweep_stale(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let uid = nix::unistd::getuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest
            .split_once('-')
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours
            && pid != std::process::id()
            && !process_alive(pid)
            && std::fs::remove_dir_all(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_are_private_and_go_with_the_directory() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = PrivateDir::create(base.path()).expect("create");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        let f = dir.write("gcp.json", b"{\"k\":1}").expect("write");
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).expect("read"), b"{\"k\":1}");
        dir.write("gcp.json", b"v2").expect("rewrite");
        assert_eq!(std::fs::read(&f).expect("read"), b"v2");
        assert!(dir.write("../x", b"no").is_err());
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn stale_directories_of_dead_processes_are_swept() {
        let base = tempfile::tempdir().expect("tempdir");
        // A pid that cannot be running (beyond pid_max).
        let stale = base.path().join(format!("{PREFIX}4194305-abcd"));
        std::fs::create_dir(&stale).expect("mkdir");
        std::fs::write(stale.join("f"), b"x").expect("write");
        let live = PrivateDir::create(base.path()).expect("create");
        let other = base.path().join("unrelated");
        std::fs::create_dir(&other).expect("mkdir");
        assert_eq!(sweep_stale(base.path()), 1);
        assert!(!stale.exists());
        assert!(live.path().exists());
        assert!(other.exists());
    }
}
