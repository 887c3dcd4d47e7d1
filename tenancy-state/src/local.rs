//! `LocalBackend`: the [`StateBackend`] on plain files under a root
//! directory, with compare-and-swap that is safe across processes.
//!
//! # How a write works
//!
//! 1. The new content goes to a hidden temp file (`.tmp-<uuid>`) in the
//!    object's directory and is fsynced.
//! 2. The writer takes an exclusive advisory lock (`File::lock`, i.e.
//!    `flock`) on the directory's hidden lock file `.tenancy.lock`. Every
//!    mutation of an object in that directory (put in any mode, delete)
//!    holds this lock, in every process, so check-then-write is atomic.
//! 3. Under the lock it checks the mode (`Create`: no object; `Update(v)`:
//!    the current version is `v`), renames the temp file over the object
//!    (atomic: a reader sees the old or the new file, never a mix), and
//!    releases the lock. The directory is fsynced afterwards.
//!
//! Readers take no lock: they open the file, `fstat` it and read it; since
//! files are only ever replaced by rename, never written in place, the
//! metadata and content of one open file always belong together.
//!
//! # Versions
//!
//! A version is `<inode>.<mtime ns>.<size>.<FNV-1a 64 of the content>`.
//! Every write creates a new file (a fresh inode while the old one still
//! exists), so consecutive versions always differ; an old inode number can
//! only come back with a later mtime, and even on a filesystem with coarse
//! timestamps the content hash must match too.
//!
//! # Leftovers of a crash
//!
//! A writer killed between step 1 and the rename leaves its temp file
//! behind. Temp files older than [`TEMP_FILE_MAX_AGE`] (1 h: a live writer
//! renames within seconds) are removed by the first write of each process
//! into their directory (one directory scan per directory and process,
//! never on the read path), and by `tenancy doctor --repair`, which also
//! reports every younger one. A writer paused for longer than the bound
//! loses its temp file and its rename fails: the write reports an error
//! and changes nothing.
//!
//! Hidden names (starting with `.`) are never listed and no `StateKey` can
//! name them, since key segments cannot start with `.`. Directories are never
//! removed (their lock file lives in them), which keeps the lock protocol
//! free of delete-while-locked races.
//!
//! # Permissions
//!
//! A store holds bcrypt hashes and every tenant's state, so on unix every
//! directory it creates (the root and its missing parents included) is mode
//! 0700 and every file it creates (temp files, hence objects, and lock
//! files) is mode 0600, whoever opens the store and whatever the umask: the
//! mode is given at creation and set again on what was just created, since
//! the umask may have taken bits away. Directories and files that already
//! exist keep their mode, until an object is rewritten (the new file is
//! 0600).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use tenancy_core::{
    Capabilities, DeleteMode, Error, ListEntry, Object, PutMode, Result, StateBackend, StateKey,
    Version,
};

const LOCK_FILE: &str = ".tenancy.lock";
/// The name prefix of temp files.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";
/// How old a temp file must be before it is taken for a crash's leftover
/// and removed (see the module docs).
pub const TEMP_FILE_MAX_AGE: Duration = Duration::from_secs(3600);
const BACKEND: &str = "local";

/// The mode of a local write, without borrowing.
#[derive(Debug, Clone)]
pub(crate) enum LocalPut {
    Overwrite,
    Create,
    Update(Version),
}

/// A file found by a listing: its store key (relative to the root, `/`-separated).
#[derive(Debug)]
pub(crate) struct LocalEntry {
    pub(crate) key: String,
    pub(crate) size: u64,
    pub(crate) modified: Option<DateTime<Utc>>,
}

/// The local store: a root directory.
#[derive(Debug)]
pub(crate) struct LocalFs {
    root: PathBuf,
    /// Directories this process has swept of old temp files already.
    swept: Mutex<HashSet<PathBuf>>,
}

/// Something below the root that `tenancy doctor` looks at: a temp file or
/// a file or directory (the root included) that group or others may read,
/// write or enter.
#[derive(Debug, Clone)]
pub(crate) struct LocalFinding {
    pub(crate) path: PathBuf,
    pub(crate) is_dir: bool,
    /// The permission bits.
    pub(crate) mode: u32,
    /// A `.tmp-*` file, with its age (zero when the mtime is unreadable or in the future).
    pub(crate) temp_age: Option<Duration>,
}

/// The age of a file by its mtime.
fn age_of(meta: &fs::Metadata, now: SystemTime) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or(Duration::ZERO)
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(_meta: &fs::Metadata) -> u32 {
    0
}

/// Removes the temp files in `dir` older than `max_age` (best effort: a
/// file another sweeper removed first, or one that cannot be removed, is
/// left to `tenancy doctor`).
fn sweep_dir(dir: &Path, max_age: Duration) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        let old = is_temp
            && entry
                .metadata()
                .is_ok_and(|m| m.is_file() && age_of(&m, now) > max_age);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn io_err(what: &str, e: io::Error) -> Error {
    Error::backend(BACKEND, format!("{what}: {e}"))
}

/// True for errors that mean "there is no object here".
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
    )
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(unix)]
fn inode(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(not(unix))]
fn inode(_meta: &fs::Metadata) -> u64 {
    0
}

fn version_of(meta: &fs::Metadata, content: &[u8]) -> Version {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Version(format!(
        "{:x}.{:x}.{:x}.{:016x}",
        inode(meta),
        mtime,
        meta.len(),
        fnv1a(content)
    ))
}

fn modified(meta: &fs::Metadata) -> Option<DateTime<Utc>> {
    meta.modified().ok().map(DateTime::<Utc>::from)
}

/// The mode of every directory a store creates.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// The mode of every file a store creates.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each with mode 0700 whatever the
/// umask; an existing directory is left as it is. Like `create_dir_all`, a
/// file in the way is an error (`NotADirectory` or `AlreadyExists`).
fn create_private_dirs(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", dir.display()),
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dirs(parent)?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    match builder.create(dir) {
        Ok(()) => {
            // The umask may have taken bits away from the mode above.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
            }
            Ok(())
        }
        // Created meanwhile by another writer.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a new file (never an existing one, never through a symlink) with
/// mode 0600 whatever the umask.
fn create_private_file(path: &Path, read: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(read).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Holds the exclusive lock of one directory until dropped.
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        // Usually it exists; the first writer of a directory creates it (0600).
        let opened = match OpenOptions::new().read(true).write(true).open(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => match create_private_file(&path, true) {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    OpenOptions::new().read(true).write(true).open(&path)
                }
                created => created,
            },
            other => other,
        };
        let file =
            opened.map_err(|e| io_err(&format!("cannot open lock file {}", path.display()), e))?;
        file.lock()
            .map_err(|e| io_err(&format!("cannot lock {}", path.display()), e))?;
        Ok(DirLock { _file: file })
    }
}

/// Reads an object: `None` when there is no file at `path`.
fn read_object(path: &Path) -> Result<Option<(Vec<u8>, Version)>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(e) => return Err(io_err(&format!("cannot open {}", path.display()), e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| io_err(&format!("cannot stat {}", path.display()), e))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    match file.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if is_missing(&e) => return Ok(None),
        Err(e) => return Err(io_err(&format!("cannot read {}", path.display()), e)),
    }
    let version = version_of(&meta, &buf);
    Ok(Some((buf, version)))
}

fn sync_dir(dir: &Path) {
    // Durability of the rename; atomicity does not depend on it. Some
    // platforms cannot open directories, which is why errors are ignored.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl LocalFs {
    /// Opens (and creates) the root directory.
    pub(crate) fn open(root: &Path) -> Result<LocalFs> {
        create_private_dirs(root).map_err(|e| {
            io_err(
                &format!("cannot create state directory {}", root.display()),
                e,
            )
        })?;
        let meta = fs::metadata(root)
            .map_err(|e| io_err(&format!("cannot stat {}", root.display()), e))?;
        if !meta.is_dir() {
            return Err(Error::invalid(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        // absolute, so a later change of the working directory moves nothing
        let root = fs::canonicalize(root)
            .map_err(|e| io_err(&format!("cannot resolve {}", root.display()), e))?;
        Ok(LocalFs {
            root,
            swept: Mutex::default(),
        })
    }

    /// Sweeps `dir` of old temp files, once per process.
    fn sweep_once(&self, dir: &Path) {
        let first = match self.swept.lock() {
            Ok(mut seen) => seen.insert(dir.to_path_buf()),
            Err(_) => false,
        };
        if first {
            sweep_dir(dir, TEMP_FILE_MAX_AGE);
        }
    }

    /// Every temp file and every file or directory that group or others
    /// may use, below the root and the root itself (symlinks are not followed).
    pub(crate) fn inspect(&self) -> Result<Vec<LocalFinding>> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        let meta = fs::symlink_metadata(&self.root)
            .map_err(|e| io_err(&format!("cannot stat {}", self.root.display()), e))?;
        if mode_of(&meta) & 0o077 != 0 {
            out.push(LocalFinding {
                path: self.root.clone(),
                is_dir: true,
                mode: mode_of(&meta),
                temp_age: None,
            });
        }
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = fs::read_dir(&dir)
                .map_err(|e| io_err(&format!("cannot list {}", dir.display()), e))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| io_err(&format!("cannot list {}", dir.display()), e))?;
                let path = entry.path();
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if is_missing(&e) => continue,
                    Err(e) => return Err(io_err(&format!("cannot stat {}", path.display()), e)),
                };
                let is_temp = meta.is_file()
                    && entry
                        .file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(TEMP_PREFIX));
                let mode = mode_of(&meta);
                if is_temp || (!meta.file_type().is_symlink() && mode & 0o077 != 0) {
                    out.push(LocalFinding {
                        path: path.clone(),
                        is_dir: meta.is_dir(),
                        mode,
                        temp_age: is_temp.then(|| age_of(&meta, now)),
                    });
                }
                if meta.is_dir() {
                    stack.push(path);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes a temp file found by [`LocalFs::inspect`] if it is still
    /// older than `max_age`.
    pub(crate) fn remove_temp(&self, path: &Path, max_age: Duration) -> Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() && age_of(&m, SystemTime::now()) > max_age => {
                match fs::remove_file(path) {
                    Ok(()) => Ok(true),
                    Err(e) if is_missing(&e) => Ok(false),
                    Err(e) => Err(io_err(&format!("cannot remove {}", path.display()), e)),
                }
            }
            Ok(_) => Ok(false),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(io_err(&format!("cannot stat {}", path.display()), e)),
        }
    }

    /// Takes group and other permissions away (0700 / 0600, the modes the
    /// store creates).
    pub(crate) fn make_private(&self, path: &Path, is_dir: bool) -> Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if is_dir { DIR_MODE } else { FILE_MODE };
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| io_err(&format!("cannot change the mode of {}", path.display()), e))
        }
        #[cfg(not(unix))]
        {
            let _ = (path, is_dir);
            Ok(())
        }
    }

    /// The root directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a store key (`/`-separated, segments already validated).
    fn path(&self, key: &str) -> PathBuf {
        let mut p = self.root.clone();
        for seg in key.split('/') {
            p.push(seg);
        }
        p
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        Ok(read_object(&self.path(key))?.map(|(b, v)| (Bytes::from(b), v)))
    }

    pub(crate) fn put(&self, key: &str, value: &[u8], mode: LocalPut) -> Result<Version> {
        let path = self.path(key);
        let dir = match path.parent() {
            Some(d) => d.to_path_buf(),
            None => return Err(Error::invalid(format!("key {key} has no directory"))),
        };
        if let Err(e) = create_private_dirs(&dir) {
            return Err(match e.kind() {
                ErrorKind::NotADirectory | ErrorKind::AlreadyExists => Error::invalid(format!(
                    "cannot store key {key}: a key above it is an object, and local files \
                     cannot hold an object and keys below it at the same time"
                )),
                _ => io_err(&format!("cannot create directory {}", dir.display()), e),
            });
        }

        self.sweep_once(&dir);
        // 1. write and fsync a temp file, outside the lock
        let tmp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let written = (|| -> io::Result<fs::Metadata> {
            let mut f = create_private_file(&tmp, false)?;
            f.write_all(value)?;
            f.sync_all()?;
            f.metadata()
        })();
        let meta = match written {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_err(&format!("cannot write {}", tmp.display()), e));
            }
        };
        let new_version = version_of(&meta, value);

        // 2. check and rename under the directory lock
        let outcome = (|| -> Result<()> {
            let _lock = DirLock::acquire(&dir)?;
            match &mode {
                LocalPut::Overwrite => {}
                LocalPut::Create => {
                    if matches!(fs::symlink_metadata(&path), Ok(m) if !m.is_dir()) {
                        return Err(Error::already_exists(format!("key {key}")));
                    }
                }
                LocalPut::Update(want) => match read_object(&path)? {
                    Some((_, have)) if &have == want => {}
                    _ => {
                        return Err(Error::precondition(format!(
                            "key {key} is no longer at version {want}"
                        )))
                    }
                },
            }
            fs::rename(&tmp, &path).map_err(|e| match e.kind() {
                ErrorKind::IsADirectory | ErrorKind::DirectoryNotEmpty => Error::invalid(format!(
                    "cannot store key {key}: keys below it exist, and local files cannot hold \
                     an object and keys below it at the same time"
                )),
                _ => io_err(&format!("cannot rename into {}", path.display()), e),
            })
        })();
        if let Err(e) = outcome {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&dir);
        Ok(new_version)
    }

    pub(crate) fn delete(&self, key: &str, if_version: Option<&Version>) -> Result<()> {
        let path = self.path(key);
        let dir = match path.parent() {
            Some(d) => d,
            None => return Err(Error::invalid(format!("key {key} has no directory"))),
        };
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            _ => {
                // no directory, so no object
                return match if_version {
                    None => Ok(()),
                    Some(want) => Err(Error::precondition(format!(
                        "key {key} is no longer at version {want}"
                    ))),
                };
            }
        }
        let lock = DirLock::acquire(dir)?;
        if let Some(want) = if_version {
            match read_object(&path)? {
                Some((_, have)) if &have == want => {}
                _ => {
                    return Err(Error::precondition(format!(
                        "key {key} is no longer at version {want}"
                    )))
                }
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(io_err(&format!("cannot delete {}", path.display()), e)),
        }
        drop(lock);
        sync_dir(dir);
        Ok(())
    }

    /// Walks every object below the store key `prefix` (all for `None`) and
    /// hands each to `emit`; stops early when `emit` returns false.
    pub(crate) fn walk(
        &self,
        prefix: Option<&str>,
        mut emit: impl FnMut(Result<LocalEntry>) -> bool,
    ) {
        let (start, key_prefix) = match prefix {
            Some(p) => (self.path(p), format!("{p}/")),
            None => (self.root.clone(), String::new()),
        };
        let mut stack: Vec<(PathBuf, String)> = vec![(start, key_prefix)];
        while let Some((dir, kp)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if is_missing(&e) => continue,
                Err(e) => {
                    if !emit(Err(io_err(&format!("cannot list {}", dir.display()), e))) {
                        return;
                    }
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        if !emit(Err(io_err(&format!("cannot list {}", dir.display()), e))) {
                            return;
                        }
                        continue;
                    }
                };
                let name = entry.file_name();
                // hidden names are ours (temp and lock files, probes);
                // names that are not UTF-8 cannot be keys
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if is_missing(&e) => continue,
                    Err(e) => {
                        if !emit(Err(io_err(
                            &format!("cannot stat {}", entry.path().display()),
                            e,
                        ))) {
                            return;
                        }
                        continue;
                    }
                };
                let key = format!("{kp}{name}");
                if meta.is_dir() {
                    stack.push((entry.path(), format!("{key}/")));
                } else if meta.is_file() {
                    let e = LocalEntry {
                        key,
                        size: meta.len(),
                        modified: modified(&meta),
                    };
                    if !emit(Ok(e)) {
                        return;
                    }
                }
            }
        }
    }
}

/// A [`StateBackend`] on plain files under a root directory, named `local`:
/// every capability, safe across processes (see the module docs). Cloning
/// shares the same root.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    fs: Arc<LocalFs>,
}

impl LocalBackend {
    /// Plain files under `root` (created if missing).
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        Ok(LocalBackend {
            fs: Arc::new(LocalFs::open(root.as_ref())?),
        })
    }

    /// The root directory (canonical: a later change of the working
    /// directory moves nothing).
    pub fn root(&self) -> &Path {
        self.fs.root()
    }

    pub(crate) fn files(&self) -> &LocalFs {
        &self.fs
    }
}

#[async_trait]
impl StateBackend for LocalBackend {
    fn name(&self) -> &str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        let (fs, k) = (self.fs.clone(), key.to_string());
        blocking(move || fs.get(&k))
            .await
            .map(|o| o.map(|(bytes, version)| Object { bytes, version }))
    }

    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        let (fs, k) = (self.fs.clone(), key.to_string());
        let mode = match mode {
            PutMode::Overwrite => LocalPut::Overwrite,
            PutMode::Create => LocalPut::Create,
            PutMode::Update(v) => LocalPut::Update(v),
        };
        blocking(move || fs.put(&k, &value, mode)).await
    }

    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        let (fs, k) = (self.fs.clone(), key.to_string());
        let v = match mode {
            DeleteMode::Any => None,
            DeleteMode::IfVersion(v) => Some(v),
        };
        blocking(move || fs.delete(&k, v.as_ref())).await
    }

    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        // hidden names (temp files, lock files) are never keys
        local_list(self.fs.clone(), prefix.cloned(), |k| StateKey::new(k).ok())
    }
}

/// Runs blocking file I/O on tokio's blocking pool, or inline when there is
/// no tokio runtime (e.g. under `futures::executor::block_on`).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h
            .spawn_blocking(f)
            .await
            .map_err(|e| Error::backend("local", e))?,
        Err(_) => f(),
    }
}

fn local_list<'a>(
    fs: Arc<LocalFs>,
    prefix: Option<StateKey>,
    relative: impl Fn(&str) -> Option<StateKey> + Send + Sync + 'static,
) -> BoxStream<'a, Result<ListEntry>> {
    let convert = move |e: Result<LocalEntry>| -> Option<Result<ListEntry>> {
        match e {
            Ok(e) => relative(&e.key).map(|key| {
                Ok(ListEntry {
                    key,
                    size: e.size,
                    last_modified: e.modified,
                })
            }),
            Err(e) => Some(Err(e)),
        }
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        // no tokio runtime: walk inline
        let mut out = Vec::new();
        fs.walk(prefix.as_ref().map(|p| p.as_str()), |e| {
            if let Some(item) = convert(e) {
                out.push(item);
            }
            true
        });
        return stream::iter(out).boxed();
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ListEntry>>(1024);
    handle.spawn_blocking(move || {
        fs.walk(prefix.as_ref().map(|p| p.as_str()), |e| match convert(e) {
            Some(item) => tx.blocking_send(item).is_ok(),
            None => true,
        });
    });
    stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_change_on_every_write_even_with_equal_content() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFs::open(dir.path()).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let v = fs.put("a/b", b"same", LocalPut::Overwrite).unwrap();
            assert!(seen.insert(v.clone()), "version {v} repeated");
            assert_eq!(fs.get("a/b").unwrap().unwrap().1, v);
        }
    }

    #[test]
    fn hidden_files_are_not_listed_and_temp_files_do_not_linger() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFs::open(dir.path()).unwrap();
        fs.put("x/y", b"1", LocalPut::Create).unwrap();
        assert!(fs.put("x/y", b"2", LocalPut::Create).is_err());
        let mut keys = Vec::new();
        fs.walk(None, |e| {
            keys.push(e.unwrap().key);
            true
        });
        assert_eq!(keys, vec!["x/y".to_string()]);
        let names: Vec<String> = fs::read_dir(dir.path().join("x"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n == "y" || n == LOCK_FILE),
            "only the object and the lock file remain: {names:?}"
        );
    }

    /// Plants `n` temp files in `dir`, `age` old, as killed writers leave them.
    fn plant_temp_files(dir: &Path, n: usize, age: Duration) -> Vec<PathBuf> {
        let when = SystemTime::now() - age;
        (0..n)
            .map(|_| {
                let p = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
                let f = File::create(&p).unwrap();
                f.set_modified(when).unwrap();
                p
            })
            .collect()
    }

    #[test]
    fn the_first_write_into_a_directory_sweeps_temp_files_older_than_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFs::open(dir.path()).unwrap();
        fs.put("tenants/acme/v1/state.json", b"1", LocalPut::Create)
            .unwrap();
        let d = dir.path().join("tenants").join("acme").join("v1");
        // 20 crashes of writers, after the directory was first written
        let old = plant_temp_files(&d, 42, TEMP_FILE_MAX_AGE + Duration::from_secs(60));
        let young = plant_temp_files(&d, 1, Duration::from_secs(5));
        // the next process that writes there
        let next = LocalFs::open(dir.path()).unwrap();
        next.put("tenants/acme/v1/other.json", b"2", LocalPut::Create)
            .unwrap();
        let left = old.iter().filter(|p| p.exists()).count();
        assert_eq!(left, 0, "{left} of 42 old temp files are still there");
        assert!(
            young[0].exists(),
            "a young temp file may be a live writer's"
        );
        assert_eq!(
            &next.get("tenants/acme/v1/state.json").unwrap().unwrap().0[..],
            b"1"
        );
    }

    /// Every directory and file below `dir`, with its mode.
    #[cfg(unix)]
    fn modes_below(dir: &Path) -> Vec<(PathBuf, u32)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let meta = fs::symlink_metadata(&p).unwrap();
                out.push((p.clone(), meta.permissions().mode() & 0o7777));
                if meta.is_dir() {
                    stack.push(p);
                }
            }
        }
        out
    }

    #[cfg(unix)]
    #[test]
    fn a_store_creates_its_directories_0700_and_its_files_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // The root and a missing parent of it are created by the store.
        let fs = LocalFs::open(&dir.path().join("home").join("data")).unwrap();
        fs.put("tenants.yaml", b"m", LocalPut::Create).unwrap();
        let v = fs
            .put("tenants/acme/v1/state.json", b"1", LocalPut::Create)
            .unwrap();
        fs.put("tenants/acme/v1/state.json", b"2", LocalPut::Update(v))
            .unwrap();
        fs.put("locks/x", b"l", LocalPut::Overwrite).unwrap();
        fs.delete("locks/x", None).unwrap();
        let found = modes_below(dir.path());
        assert!(found.len() >= 10, "{found:?}");
        for (path, mode) in found {
            let want = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{} is {mode:o}", path.display());
        }
        // An existing root keeps its mode: the store only sets what it creates.
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o750)).unwrap();
        LocalFs::open(&shared).unwrap();
        assert_eq!(
            fs::metadata(&shared).unwrap().permissions().mode() & 0o777,
            0o750
        );
    }

    #[test]
    fn object_and_keys_below_it_give_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFs::open(dir.path()).unwrap();
        fs.put("a/b", b"1", LocalPut::Overwrite).unwrap();
        let err = fs.put("a/b/c", b"2", LocalPut::Overwrite).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        fs.put("p/q/r", b"1", LocalPut::Overwrite).unwrap();
        let err = fs.put("p/q", b"2", LocalPut::Overwrite).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        assert!(fs.get("p/q").unwrap().is_none(), "a directory is no object");
        assert!(fs.get("a/b/c").unwrap().is_none());
    }
}
