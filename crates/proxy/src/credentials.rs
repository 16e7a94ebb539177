//! Upstream API keys, read from mounted Secret files: credential `"<secret>/<key>"` lives at
//! `<credentials-dir>/<secret>/<key>` (the layout of a Secret volume mounted per secret).
//!
//! Values are cached for `--credentials-refresh` so the hot path does not touch the filesystem,
//! then re-read, so a rotated key is picked up without a restart. Values are never logged: the
//! only thing an error or a log line names is the file path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use http::HeaderValue;

/// Why a credential could not be used. `Display` names the path and the fix, never content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("credential {credential} cannot be used: {path} {problem}; {fix}")]
pub struct CredentialError {
    /// `"<secret>/<key>"` as written in the routing document.
    pub credential: String,
    /// The file the proxy looked for.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
    /// How to fix it.
    pub fix: &'static str,
}

#[derive(Debug)]
struct Cached {
    header: HeaderValue,
    read_at: Instant,
}

/// Reads and caches credential files under one directory.
#[derive(Debug)]
pub struct CredentialStore {
    dir: PathBuf,
    refresh: Duration,
    cache: RwLock<HashMap<String, Cached>>,
}

impl CredentialStore {
    /// A store for files under `dir`, each re-read at most every `refresh`.
    pub fn new(dir: PathBuf, refresh: Duration) -> Self {
        CredentialStore { dir, refresh, cache: RwLock::new(HashMap::new()) }
    }

    /// The directory credentials are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path credential `"<secret>/<key>"` is read from.
    pub fn path_of(&self, credential: &str) -> PathBuf {
        // The routing document validates "<secret>/<key>" (no "..", one "/"), so this join
        // cannot leave the directory.
        self.dir.join(credential)
    }

    /// `Bearer <value>` for `credential`, marked sensitive so it is never printed by `Debug`.
    pub fn authorization(&self, credential: &str) -> Result<HeaderValue, CredentialError> {
        if let Ok(cache) = self.cache.read()
            && let Some(cached) = cache.get(credential)
            && cached.read_at.elapsed() < self.refresh
        {
            return Ok(cached.header.clone());
        }
        let header = self.read(credential)?;
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(
                credential.to_owned(),
                Cached { header: header.clone(), read_at: Instant::now() },
            );
        }
        Ok(header)
    }

    fn read(&self, credential: &str) -> Result<HeaderValue, CredentialError> {
        let path = self.path_of(credential);
        let error = |problem: String, fix| CredentialError {
            credential: credential.to_owned(),
            path: path.clone(),
            problem,
            fix,
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            let problem = if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist".to_owned()
            } else {
                format!("cannot be read ({})", e.kind())
            };
            error(
                problem,
                "mount the Secret there (or point --credentials-dir at the directory holding \
                 <secret>/<key> files)",
            )
        })?;
        let value = trim_ascii_whitespace(&bytes);
        if value.is_empty() {
            return Err(error("is empty".to_owned(), "put the API key into the Secret"));
        }
        let mut header_bytes = Vec::with_capacity(7 + value.len());
        header_bytes.extend_from_slice(b"Bearer ");
        header_bytes.extend_from_slice(value);
        let mut header = HeaderValue::from_bytes(&header_bytes).map_err(|_| {
            error(
                "holds characters not allowed in an HTTP header".to_owned(),
                "store the bare API key, one line, without control characters",
            )
        })?;
        header.set_sensitive(true);
        Ok(header)
    }
}

fn trim_ascii_whitespace(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A present file becomes `Bearer <trimmed content>`, marked sensitive.
    #[test]
    fn reads_and_trims() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("openai")).unwrap();
        std::fs::write(dir.path().join("openai/api-key"), "sk-test-123\n").unwrap();
        let store = CredentialStore::new(dir.path().to_owned(), Duration::from_secs(60));
        let header = store.authorization("openai/api-key").unwrap();
        assert_eq!(header, "Bearer sk-test-123");
        assert!(header.is_sensitive());
    }

    /// Missing, empty and unprintable files are errors naming the path, never the content.
    #[test]
    fn errors_name_the_path_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("s")).unwrap();
        std::fs::write(dir.path().join("s/empty"), "  \n").unwrap();
        std::fs::write(dir.path().join("s/binary"), b"sk-secret\x01value").unwrap();
        let store = CredentialStore::new(dir.path().to_owned(), Duration::from_secs(60));
        let table =
            [("s/missing", "does not exist"), ("s/empty", "is empty"), ("s/binary", "characters")];
        for (credential, problem) in table {
            let message = store.authorization(credential).unwrap_err().to_string();
            assert!(
                message.contains(&dir.path().join(credential).display().to_string()),
                "{message}"
            );
            assert!(message.contains(problem), "{message}");
            assert!(!message.contains("sk-secret"), "{message}");
        }
    }

    /// With a zero refresh interval a rotated file is picked up on the next request.
    #[test]
    fn picks_up_rotation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("s")).unwrap();
        std::fs::write(dir.path().join("s/k"), "old").unwrap();
        let store = CredentialStore::new(dir.path().to_owned(), Duration::ZERO);
        assert_eq!(store.authorization("s/k").unwrap(), "Bearer old");
        std::fs::write(dir.path().join("s/k"), "new").unwrap();
        assert_eq!(store.authorization("s/k").unwrap(), "Bearer new");
    }

    /// Within the refresh interval the cached value is served even if the file vanished.
    #[test]
    fn caches_within_refresh() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("s")).unwrap();
        std::fs::write(dir.path().join("s/k"), "v1").unwrap();
        let store = CredentialStore::new(dir.path().to_owned(), Duration::from_secs(3600));
        assert_eq!(store.authorization("s/k").unwrap(), "Bearer v1");
        std::fs::remove_file(dir.path().join("s/k")).unwrap();
        assert_eq!(store.authorization("s/k").unwrap(), "Bearer v1");
    }
}
