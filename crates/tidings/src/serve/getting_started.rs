//! What `tidings serve` gives a new user when it generated the key: the key, a token
//! that may do everything, ready `curl` lines, and the token in a file (mode 0600) that
//! the next command reads, `TOKEN=$(cat tidings.token)`.
//!
//! The token file sits next to the history: `./tidings.db` gives `./tidings.token`; with
//! `--no-history` it is `./tidings.token`. It is replaced at start (a file left by a
//! killed run holds a token of a key that is gone) and removed when the hub stops, since
//! the key dies with the process; a file that another hub has replaced meanwhile is left
//! alone.

use std::io::Write;
use std::path::{Path, PathBuf};

use tidings_hub::auth::{MercureClaims, SigningKey, mint};

/// The token file's name when there is no history file to sit beside.
const DEFAULT_TOKEN_FILE: &str = "./tidings.token";

/// The generated key, its all-powerful token and, while the hub runs, the token file.
pub(super) struct GettingStarted {
    secret: String,
    token: String,
    /// The token file, when it could be written; removed on drop.
    file: Option<PathBuf>,
}

impl GettingStarted {
    /// Mints the token of `secret` and writes it next to `db` (or to `./tidings.token`).
    /// A file that cannot be written is a warning: the printed token works as well.
    pub(super) fn new(secret: String, db: Option<&Path>) -> anyhow::Result<Self> {
        let claims = MercureClaims {
            publish: Some(vec!["*".into()]),
            subscribe: Some(vec!["*".into()]),
            payload: None,
        };
        let token = mint(&SigningKey::hmac(&secret), &claims, None)?;
        let path = token_path(db);
        let file = match write_private(&path, format!("{token}\n").as_bytes()) {
            Ok(()) => Some(path),
            Err(err) => {
                tracing::warn!(path = %path.display(), cause = %err, "cannot write the token file");
                None
            }
        };
        Ok(Self {
            secret,
            token,
            file,
        })
    }

    /// Prints the key, the token and the `curl` lines for the hub at `url`; `curl` is
    /// the command with the options it needs (`curl --cacert FILE` for a self-signed
    /// certificate).
    pub(super) fn print(&self, url: &str, curl: &str) {
        let Self {
            secret,
            token,
            file,
        } = self;
        println!();
        println!("No JWT key was given, so this one was generated for this run (HS256):");
        println!("  TIDINGS_JWT_KEY={secret}");
        println!("A token that may publish and subscribe to every topic:");
        println!("  {token}");
        if let Some(file) = file {
            println!(
                "It is also in {} (removed when the hub stops): TOKEN=$(cat {})",
                file.display(),
                file.display()
            );
        }
        println!("Subscribe:");
        println!("  {curl} -N '{url}?topic=https://example.com/books/1'");
        println!("Publish:");
        println!(
            "  {curl} -H 'Authorization: Bearer {token}' -d 'topic=https://example.com/books/1' -d 'data={{\"title\":\"Dune\"}}' {url}"
        );
        println!();
    }
}

impl Drop for GettingStarted {
    fn drop(&mut self) {
        let Some(file) = &self.file else { return };
        // Only our own token: another hub may have written its own since.
        let ours = std::fs::read_to_string(file).is_ok_and(|text| text.trim_end() == self.token);
        if ours && let Err(err) = std::fs::remove_file(file) {
            tracing::warn!(path = %file.display(), cause = %err, "cannot remove the token file");
        }
    }
}

/// `x.db` gives `x.token` beside it; no history gives `./tidings.token`.
fn token_path(db: Option<&Path>) -> PathBuf {
    match db {
        Some(db) => {
            let path = db.with_extension("token");
            if path == db {
                // A history named `*.token`: never overwrite it.
                let mut name = db.as_os_str().to_owned();
                name.push(".token");
                PathBuf::from(name)
            } else {
                path
            }
        }
        None => PathBuf::from(DEFAULT_TOKEN_FILE),
    }
}

/// Writes `bytes` to `path`, readable by the owner only, replacing what was there. The
/// bytes go to a new file beside it that is then renamed over `path`, so a reader never
/// sees half a token and a symbolic link at `path` is replaced, not followed.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_sits_beside_the_history() {
        assert_eq!(
            token_path(Some(Path::new("./tidings.db"))),
            Path::new("./tidings.token")
        );
        assert_eq!(
            token_path(Some(Path::new("/var/lib/hub/events"))),
            Path::new("/var/lib/hub/events.token")
        );
        assert_eq!(
            token_path(Some(Path::new("data/hub.token"))),
            Path::new("data/hub.token.token")
        );
        assert_eq!(token_path(None), Path::new("./tidings.token"));
    }

    #[test]
    fn the_token_file_is_private_replaced_and_removed_when_ours() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hub.db");
        let path = dir.path().join("hub.token");
        std::fs::write(&path, "a token of a key that is gone\n").unwrap();
        let started =
            GettingStarted::new("a secret of 32 bytes or more, surely".into(), Some(&db)).unwrap();
        assert_eq!(started.file.as_deref(), Some(path.as_path()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", started.token));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(started);
        assert!(!path.exists());
        // Only the files that are there are the ones the test made (no temp file left).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let started =
            GettingStarted::new("another secret of 32 bytes or more".into(), Some(&db)).unwrap();
        std::fs::write(&path, "another hub's token\n").unwrap();
        drop(started);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "another hub's token\n"
        );
    }

    #[test]
    fn a_token_file_that_cannot_be_written_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("missing").join("hub.db");
        let started =
            GettingStarted::new("a secret of 32 bytes or more, surely".into(), Some(&db)).unwrap();
        assert!(started.file.is_none());
    }
}
