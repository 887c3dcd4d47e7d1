//! `TENANCY_HOME` (default `~/.tenancy`) and the session files in it.
//!
//! `admin-session` (8 h) and `session` (7 d) hold a [`Session`] plus the
//! backend URL it was opened on. They are written atomically with mode 0600
//! in a directory of mode 0700. Two different `TENANCY_HOME`s are two
//! different users.
//!
//! A session file is a convenience, not the security boundary: the CLI talks
//! to the store directly, so whoever can write the store can do anything.
//! Every command re-checks a tenant session against the registry (status,
//! credential generation), so rotation and suspension act at once.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tenancy_core::Session;

use crate::exit::{CliError, UNAUTHORIZED};
use crate::io::Io;

/// The format version of session files.
pub(crate) const SESSION_FORMAT: u32 = 1;

/// What a session file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionFile {
    /// [`SESSION_FORMAT`].
    pub format: u32,
    /// The backend URL the session was opened on.
    pub backend: String,
    /// The session.
    pub session: Session,
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

    fn login_command(self) -> &'static str {
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
    /// `TENANCY_HOME`, else `$HOME/.tenancy`; made absolute.
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
        Ok(Home { dir })
    }

    /// A home at `dir` (tests).
    #[cfg(test)]
    pub(crate) fn at(dir: impl Into<PathBuf>) -> Self {
        Home { dir: dir.into() }
    }

    /// The directory.
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

    /// Creates the home directory (mode 0700) if missing.
    pub(crate) fn ensure_dir(&self) -> anyhow::Result<()> {
        create_private_dir(&self.dir)
    }

    /// Writes a session file atomically with mode 0600.
    pub(crate) fn save(&self, slot: SessionSlot, file: &SessionFile) -> anyhow::Result<()> {
        self.ensure_dir()?;
        let path = self.session_path(slot);
        let tmp = self
            .dir
            .join(format!(".{}.tmp.{}", slot.file_name(), std::process::id()));
        let bytes = serde_json::to_vec_pretty(file).context("encoding the session")?;
        let write = || -> std::io::Result<()> {
            let mut f = open_private(&tmp)?;
            f.write_all(&bytes)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing the session file {}", path.display()));
        }
        Ok(())
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

/// Creates a directory (and parents) with mode 0700 for the last one.
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
        .with_context(|| format!("creating the directory {}", dir.display()))
}

fn open_private(path: &Path) -> std::io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(0o600);
        let f = o.open(path)?;
        // The mode above is masked by the umask, and an old file keeps its mode.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(f)
    }
    #[cfg(not(unix))]
    {
        o.open(path)
    }
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
            session: Session::admin(Utc::now()),
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
