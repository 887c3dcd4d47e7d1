//! `TENANCY_HOME` (default `~/.tenancy`) and the session files in it.
//!
//! `admin-session` (8 h) and `session` (7 d) hold a [`Session`] plus the
//! backend URL it was opened on. They are written atomically with mode 0600
//! in a directory of mode 0700. Two different `TENANCY_HOME`s are two
//! different users.
//!
//! The home is not a trap: like ssh, the CLI refuses a home that another
//! user could plant files in (writable by group or others, or owned by
//! someone else) before it reads, writes or removes anything there, and a
//! session is written through a temp file that is created exclusively with
//! a random name (the `tempfile` crate: `O_EXCL`, so a planted symlink is
//! never followed) and then renamed over the session file.
//!
//! On a store the CLI opens itself, a session file is a convenience, not
//! the security boundary: whoever can write the store can do anything.
//! Every command re-checks a tenant session against the registry (status,
//! credential generation), so rotation and suspension act at once. In
//! remote mode (`--backend https://...`) the file holds the server's URL
//! and the session token the server issued at login; the server checks
//! the token on every request, and the secret or admin password is never
//! written anywhere.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tenancy_core::Session;

use crate::exit::{CliError, UNAUTHORIZED, USAGE};
use crate::io::Io;

/// The format version of session files.
pub(crate) const SESSION_FORMAT: u32 = 1;

/// What a session file holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionFile {
    /// [`SESSION_FORMAT`].
    pub format: u32,
    /// The backend URL the session was opened on (a server's base URL in
    /// remote mode).
    pub backend: String,
    /// The session.
    pub session: Session,
    /// In remote mode, the server-issued session token (never the secret
    /// or the admin password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for SessionFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionFile")
            .field("format", &self.format)
            .field("backend", &self.backend)
            .field("session", &self.session)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Which of the two session files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionSlot {
    /// `admin-session`.
    Admin,
    /// `session` (a tenant's).
    Tenant,
}

impl SessionSlot {
    fn file_name(self) -> &'static str {
        match self {
            SessionSlot::Admin => "admin-session",
            SessionSlot::Tenant => "session",
        }
    }

    pub(crate) fn login_command(self) -> &'static str {
        match self {
            SessionSlot::Admin => "tenancy admin login",
            SessionSlot::Tenant => "tenancy login --tenant ID",
        }
    }
}

/// The CLI's home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Home {
    dir: PathBuf,
}

impl Home {
    /// `TENANCY_HOME`, else `$HOME/.tenancy`; made absolute. An existing
    /// home that another user could plant files in is refused (exit 2).
    pub(crate) fn from_env(io: &Io) -> anyhow::Result<Self> {
        let dir = match (io.var("TENANCY_HOME"), io.var("HOME")) {
            (Some(h), _) => PathBuf::from(h),
            (None, Some(home)) => Path::new(home).join(".tenancy"),
            (None, None) => {
                return Err(CliError::usage(
                    "neither TENANCY_HOME nor HOME is set; set TENANCY_HOME to a directory for sessions and data",
                )
                .into())
            }
        };
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()
                .context("finding the current directory for a relative TENANCY_HOME")?
                .join(dir)
        };
        let home = Home { dir };
        home.check_existing()?;
        Ok(home)
    }

    /// A home at `dir` (tests).
    #[cfg(test)]
    pub(crate) fn at(dir: impl Into<PathBuf>) -> Self {
        Home { dir: dir.into() }
    }

    /// The directory (tests).
    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the default file backend keeps its data: `$TENANCY_HOME/data`.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The path of a session file.
    pub(crate) fn session_path(&self, slot: SessionSlot) -> PathBuf {
        self.dir.join(slot.file_name())
    }

    /// Creates the home directory (mode 0700) if missing, and refuses one
    /// that another user could plant files in (exit 2).
    pub(crate) fn ensure_dir(&self) -> anyhow::Result<()> {
        create_private_dir(&self.dir)?;
        refuse_unsafe_home(&self.dir)
    }

    /// Refuses an existing home that another user could plant files in; a
    /// missing one is fine (nothing to read, and it is created private).
    fn check_existing(&self) -> anyhow::Result<()> {
        if self.dir.exists() {
            refuse_unsafe_home(&self.dir)?;
        }
        Ok(())
    }

    /// Writes a session file atomically with mode 0600: a temp file created
    /// exclusively under a random name (never through a planted link), then
    /// renamed over the session file.
    pub(crate) fn save(&self, slot: SessionSlot, file: &SessionFile) -> anyhow::Result<()> {
        self.ensure_dir()?;
        let path = self.session_path(slot);
        let bytes = serde_json::to_vec_pretty(file).context("encoding the session")?;
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::Builder::new()
                .prefix(&format!(".{}.tmp.", slot.file_name()))
                .tempfile_in(&self.dir)?;
            make_private(tmp.as_file())?;
            tmp.write_all(&bytes)?;
            tmp.write_all(b"\n")?;
            tmp.as_file().sync_all()?;
            // On failure the temp file is removed when dropped.
            tmp.persist(&path).map(drop).map_err(|e| e.error)
        };
        write().with_context(|| format!("writing the session file {}", path.display()))
    }

    /// Reads a session file: `None` when there is none; an error (exit 3)
    /// when it cannot be decoded.
    pub(crate) fn load(&self, slot: SessionSlot) -> anyhow::Result<Option<SessionFile>> {
        let path = self.session_path(slot);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the session file {}", path.display()))
            }
        };
        let corrupt = |why: String| {
            CliError::new(
                UNAUTHORIZED,
                format!(
                    "the session file {} is corrupted ({why}); log in again with `{}`",
                    path.display(),
                    slot.login_command()
                ),
            )
        };
        let file: SessionFile = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("line {} column {}", e.line(), e.column())))?;
        if file.format != SESSION_FORMAT {
            return Err(corrupt(format!("unknown format {}", file.format)).into());
        }
        let right_kind = match slot {
            SessionSlot::Admin => file.session.is_admin(),
            SessionSlot::Tenant => !file.session.is_admin(),
        };
        if !right_kind {
            return Err(corrupt("it holds the other kind of session".into()).into());
        }
        Ok(Some(file))
    }

    /// Deletes a session file; `false` when there was none.
    pub(crate) fn remove(&self, slot: SessionSlot) -> anyhow::Result<bool> {
        let path = self.session_path(slot);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

/// Creates a directory (and parents) with mode 0700, whatever the umask,
/// for the last one (an existing directory keeps its mode).
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .with_context(|| format!("creating the directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The mode above is masked by the umask.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
    }
    Ok(())
}

/// Mode 0600 on an open file, whatever the umask took away at creation.
fn make_private(file: &fs::File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// The user this process runs as: the owner of a file it just created (no
/// `libc` needed), in the temp directory or else in `near`.
#[cfg(unix)]
fn current_uid(near: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::tempfile()
        .or_else(|_| tempfile::tempfile_in(near))
        .context("creating a temp file to learn the current user")?;
    Ok(probe
        .metadata()
        .context("reading the owner of a temp file")?
        .uid())
}

/// Refuses a home that another user could plant files in, as ssh does:
/// writable by group or others, or owned by someone else (exit 2, one line
/// naming the fix).
#[cfg(unix)]
fn refuse_unsafe_home(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let me = current_uid(dir)?;
    if meta.uid() != me {
        return Err(CliError::new(
            USAGE,
            format!(
                "TENANCY_HOME {} belongs to another user (uid {}, you are {me}), who could plant \
                 sessions in it; set TENANCY_HOME to a directory of your own",
                dir.display(),
                meta.uid()
            ),
        )
        .into());
    }
    if meta.mode() & 0o022 != 0 {
        return Err(CliError::new(
            USAGE,
            format!(
                "TENANCY_HOME {} is writable by group or others (mode {:o}), who could plant \
                 files in it; run `chmod 700 {}`",
                dir.display(),
                meta.mode() & 0o7777,
                dir.display()
            ),
        )
        .into());
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_unsafe_home(_dir: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::exit_code;
    use chrono::Utc;

    fn admin_file() -> SessionFile {
        SessionFile {
            format: SESSION_FORMAT,
            backend: "file:///x".into(),
            session: Session::admin(Utc::now(), 1),
            token: None,
        }
    }

    #[test]
    fn save_load_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        assert_eq!(home.load(SessionSlot::Admin).unwrap(), None);
        let f = admin_file();
        home.save(SessionSlot::Admin, &f).unwrap();
        assert_eq!(home.load(SessionSlot::Admin).unwrap(), Some(f));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&home.session_path(SessionSlot::Admin)), 0o600);
            assert_eq!(mode(home.dir()), 0o700);
        }
        assert!(home.remove(SessionSlot::Admin).unwrap());
        assert!(!home.remove(SessionSlot::Admin).unwrap());
        let leftovers: Vec<_> = fs::read_dir(home.dir()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_temp_file_symlink_is_neither_followed_nor_chmodded() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        home.ensure_dir().unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        // The names the CLI used to write through, planted before it runs.
        for slot in ["session", "admin-session"] {
            let planted = home
                .dir()
                .join(format!(".{slot}.tmp.{}", std::process::id()));
            std::os::unix::fs::symlink(&victim, planted).unwrap();
        }
        let f = admin_file();
        home.save(SessionSlot::Admin, &f).unwrap();
        assert_eq!(home.load(SessionSlot::Admin).unwrap(), Some(f));
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"precious",
            "the link target was written"
        );
        let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the link target was chmodded");
        let session = home.session_path(SessionSlot::Admin);
        assert!(
            fs::symlink_metadata(&session).unwrap().is_file(),
            "a plain file"
        );
    }

    #[test]
    fn corrupted_and_misplaced_files_are_refused_with_exit_3() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path());
        fs::write(home.session_path(SessionSlot::Tenant), b"{not json").unwrap();
        let e = home.load(SessionSlot::Tenant).unwrap_err();
        assert_eq!(exit_code(&e), 3);
        assert!(e.to_string().contains("corrupted"), "{e}");
        assert!(e.to_string().contains("tenancy login"), "{e}");

        // An admin session copied into the tenant slot.
        home.save(SessionSlot::Tenant, &admin_file()).unwrap();
        let e = home.load(SessionSlot::Tenant).unwrap_err();
        assert_eq!(exit_code(&e), 3);
    }
}
