//! Snapshot assertions for the views (test builds only): the expected text lives in
//! `snapshots/<name>.txt`; `UPDATE_SNAPSHOTS=1` rewrites it from the current output.

use std::path::PathBuf;

/// Compares `actual` with `snapshots/<name>.txt`, or writes it when `UPDATE_SNAPSHOTS` is set.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("snapshots/{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir snapshots");
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!("{}: {err}; run with UPDATE_SNAPSHOTS=1 to create it", path.display())
    });
    assert!(
        expected == actual,
        "{} differs (UPDATE_SNAPSHOTS=1 rewrites it after review):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}
