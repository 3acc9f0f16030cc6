//! Embeds the browser console's files (`assets/console/`, served at `/`)
//! and the vendored noVNC release (`assets/novnc/`, served at
//! `/novnc/<version>/`) into the binary: writes `$OUT_DIR/console_assets.rs`,
//! a sorted table of (URL path, bytes, ETag) that `console::assets` serves.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The vendored noVNC release (see `assets/novnc/README.md`).
const NOVNC_VERSION: &str = "1.7.0";

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// FNV-1a, 64 bits: enough to tell two versions of a file apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let mut table: Vec<(String, PathBuf)> = Vec::new();
    for (dir, prefix) in [
        (root.join("assets/console"), "/".to_string()),
        (
            root.join("assets/novnc"),
            format!("/novnc/{NOVNC_VERSION}/"),
        ),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files = Vec::new();
        walk(&dir, &mut files);
        for f in files {
            let rel = f
                .strip_prefix(&dir)
                .expect("file under its directory")
                .to_str()
                .expect("asset paths are UTF-8")
                .replace('\\', "/");
            // Our note about the vendored copy, not part of noVNC.
            if prefix.starts_with("/novnc/") && rel == "README.md" {
                continue;
            }
            table.push((format!("{prefix}{rel}"), f));
        }
    }
    table.sort();
    let mut src = String::new();
    writeln!(
        src,
        "/// The vendored noVNC release, as in its URL path.\npub(crate) const NOVNC_VERSION: &str = {NOVNC_VERSION:?};"
    )
    .unwrap();
    writeln!(
        src,
        "/// (URL path, contents, ETag), sorted by path.\npub(crate) static ASSETS: &[(&str, &[u8], &str)] = &["
    )
    .unwrap();
    for (url, file) in &table {
        let bytes =
            std::fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let etag = format!("\"{:016x}\"", fnv1a(&bytes));
        writeln!(
            src,
            "    ({url:?}, include_bytes!({:?}), {etag:?}),",
            file.display().to_string()
        )
        .unwrap();
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("console_assets.rs");
    std::fs::write(out, src).expect("writing console_assets.rs");
}
