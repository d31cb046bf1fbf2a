//! Everything under the broker's data folder is private to the broker's user: recordings hold
//! typed input (passwords included), the database holds key material and the audit trail.
//!
//! Two layers: the process umask is 0o077, so anything any part of the broker (or SQLite)
//! creates is private from the start; and at every start the folder is walked and modes are
//! tightened, for installs that predate this (or files someone copied in).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{umask, Mode};

/// Mode of every folder under the data folder.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file under the data folder.
pub const FILE_MODE: u32 = 0o600;

/// Sets the process umask to 0o077, whatever the broker was started with.
pub fn restrict_umask() {
    umask(Mode::from_bits_truncate(0o077));
}

/// Restricts the umask, creates `dir` (0700) if needed and tightens the modes of everything
/// already in it: folders 0700, files 0600. Symbolic links are left alone and not followed.
pub fn secure_data_dir(dir: &Path) -> io::Result<()> {
    restrict_umask();
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    let tightened = tighten(dir)?;
    if tightened > 0 {
        tracing::warn!(tightened, dir = %dir.display(), "made files in the data folder private to the broker's user");
    }
    Ok(())
}

/// Tightens `path` and what is below it; returns how many modes changed.
fn tighten(path: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    let want = if kind.is_dir() {
        DIR_MODE
    } else if kind.is_file() {
        FILE_MODE
    } else {
        // Symbolic links, sockets, fifos: not ours to change.
        return Ok(0);
    };
    let mut changed = 0;
    let mode = meta.permissions().mode() & 0o7777;
    if mode != want {
        fs::set_permissions(path, fs::Permissions::from_mode(want))?;
        changed += 1;
    }
    if kind.is_dir() {
        for entry in fs::read_dir(path)? {
            changed += tighten(&entry?.path())?;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_loose_modes_are_tightened_and_links_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::create_dir_all(data.join("recordings/sub")).unwrap();
        fs::set_permissions(data.join("recordings"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(data.join("recordings/sub/a.cast"), b"secret").unwrap();
        fs::set_permissions(data.join("recordings/sub/a.cast"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(tmp.path().join("outside"), b"x").unwrap();
        fs::set_permissions(tmp.path().join("outside"), fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), data.join("link")).unwrap();
        // tighten, not secure_data_dir: the umask is process-wide and other tests share it.
        assert_eq!(tighten(&data).unwrap(), 4);
        assert_eq!(tighten(&data).unwrap(), 0);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&data.join("recordings")), 0o700);
        assert_eq!(mode(&data.join("recordings/sub")), 0o700);
        assert_eq!(mode(&data.join("recordings/sub/a.cast")), 0o600);
        assert_eq!(mode(&tmp.path().join("outside")), 0o644, "a link's target is not ours");
    }
}
