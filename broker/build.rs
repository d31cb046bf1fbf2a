//! Rebuilds the broker when a schema migration is added or changed (`sqlx::migrate!` embeds
//! the files at compile time), and points `AIRLOCK_WEB_DIST` at the browser console's bundle
//! (`web/dist`, built by `web/build.sh`) for `include_dir!` in `src/console/assets.rs`.
//! Without a bundle it points at an empty folder in OUT_DIR, so a plain `cargo build` still
//! builds, and the broker then serves a page saying how to build the console.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let web = manifest.join("../web");
    let dist = web.join("dist");
    // A directory is scanned whole: a rebuilt bundle (new hashed names) rebuilds the broker.
    // Without dist/ its parent is watched (a missing path would rerun this every build), so
    // the first bundle is noticed.
    let chosen = if dist.join("index.html").is_file() {
        println!("cargo:rerun-if-changed={}", dist.display());
        dist
    } else {
        println!("cargo:rerun-if-changed={}", web.display());
        let empty = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("web-dist-empty");
        if let Err(e) = std::fs::create_dir_all(&empty) {
            println!("cargo:warning=cannot create {}: {e}", empty.display());
        }
        empty
    };
    let chosen = chosen.canonicalize().unwrap_or(chosen);
    println!("cargo:rustc-env=AIRLOCK_WEB_DIST={}", chosen.display());
}
