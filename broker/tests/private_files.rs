//! Hole 7 of issue 9: everything under the broker's data folder is private to the broker's
//! user (folders 0700, files 0600), whatever umask it was started with, existing installs
//! included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{wait_for, Broker};

/// Every folder and file under `dir` whose mode is not 0700 / 0600, with its mode.
fn loose(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            found.push(format!("{} {mode:o}", path.display()));
        }
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    found
}

#[test]
fn data_folder_is_private_whatever_the_umask() {
    // The broker inherits this process's umask: the usual, permissive one.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let dir = tempfile::tempdir().unwrap();
    // An install from before the fix: a loose folder and a recording readable by all.
    let data = dir.path().join("broker");
    std::fs::create_dir_all(data.join("recordings")).unwrap();
    for folder in [&data, &data.join("recordings")] {
        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let old = data.join("recordings/old-0123456789abcdef0.cast");
    std::fs::write(&old, b"typed password").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();

    let broker = Broker::start_in(dir, &[]);
    let agent = broker.agent("a");
    let out = broker.command(&agent.instance_id, "echo private-42").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recordings = broker.data_dir().join("recordings");
    wait_for("the recording in the local folder", Duration::from_secs(20), || {
        std::fs::read_dir(&recordings)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
            .then_some(())
    });
    let loose = loose(&broker.data_dir());
    assert!(loose.is_empty(), "not private to the broker's user:\n{}", loose.join("\n"));
}
