//! `ObjectStoreBackend`: the [`StateBackend`] on any object_store
//! `ObjectStore` (S3 behind feature `s3`; `InMemory` in tests, which keeps
//! the mapping tested without a server), with the conditional-write probe.
//!
//! object_store's generic API has conditional put (`PutMode::Create`,
//! `PutMode::Update` with an ETag) but no conditional delete, so
//! [`Capabilities::conditional_delete`] is false and `DeleteMode::IfVersion`
//! is `NotImplemented`. Versions are ETags (content hashes on S3: rewriting
//! identical bytes keeps the version).
//!
//! # The probe
//!
//! Some S3-compatible servers ignore `If-None-Match` / `If-Match`; locks and
//! the registry built on them would let two writers in. The probe (a second
//! `Create` of `.tenancy-probe/<uuid>` must be refused, an `Update` with a
//! wrong version too) runs once per store: on success it leaves the marker
//! `.tenancy-probe/verified`. By default nothing is checked until the first
//! conditional write of the process, which reads the marker and probes only
//! when it is missing; reads never probe. Names starting with `.` cannot be
//! a [`StateKey`], so no caller can see or touch these objects.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path as StorePath;
#[cfg(feature = "s3")]
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload, UpdateVersion};
use tenancy_core::{
    Capabilities, DeleteMode, Error, ListEntry, Object, PutMode, Result, StateBackend, StateKey,
    Version,
};

/// The reserved prefix of probe objects. It starts with `.`, so no
/// [`StateKey`] can name it and listings never show it.
pub(crate) const PROBE_PREFIX: &str = ".tenancy-probe";

/// The marker the probe leaves once a store passed it.
const PROBE_MARKER: &str = ".tenancy-probe/verified";

/// A [`StateBackend`] on an object_store `ObjectStore`: create and update
/// compare-and-swap on ETags, no conditional delete. Cloning shares the
/// store and what this process knows of its probe.
#[derive(Debug, Clone)]
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    name: &'static str,
    /// Set once this process knows the store honours conditional writes:
    /// found the marker, ran the probe, or was told
    /// ([`ObjectStoreBackend::assume_probed`]).
    verified: Arc<tokio::sync::OnceCell<()>>,
}

/// Converts object_store errors into [`Error`] (private: callers only ever see `Error`).
fn store_err(backend: &str, key: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::AlreadyExists { .. } => Error::already_exists(format!("key {key}")),
        object_store::Error::Precondition { .. } => {
            Error::precondition(format!("key {key} was changed by another writer"))
        }
        object_store::Error::NotFound { .. } => Error::not_found(format!("key {key}")),
        object_store::Error::NotImplemented {
            operation,
            implementer,
        } => Error::not_implemented(format!("{operation} on {implementer} ({backend} backend)")),
        other => Error::backend(backend, other),
    }
}

fn store_path(key: &str) -> Result<StorePath> {
    StorePath::parse(key).map_err(|e| Error::invalid(format!("key {key}: {e}")))
}

/// S3 connection settings. Fields left `None` fall back to the standard
/// `AWS_*` environment variables (as object_store's `AmazonS3Builder::from_env`
/// reads them), so AWS, MinIO, Ceph, R2 and moto all work.
#[cfg(feature = "s3")]
#[derive(Clone, Default)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// A key prefix inside the bucket (validated like a [`StateKey`]); `None` for the bucket root.
    pub prefix: Option<String>,
    /// The endpoint URL, e.g. `http://127.0.0.1:9000`; `None` for AWS.
    pub endpoint: Option<String>,
    /// The region; `us-east-1` when neither this nor `AWS_REGION` is set.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key (never printed by `Debug`).
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials (never printed by `Debug`).
    pub session_token: Option<String>,
    /// Allow plain `http://` endpoints (for local servers).
    pub allow_http: bool,
    /// Use virtual-hosted-style requests (`bucket.host`) instead of path style.
    pub virtual_hosted_style: bool,
}

#[cfg(feature = "s3")]
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

#[cfg(feature = "s3")]
fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(feature = "s3")]
fn env_flag(name: &str) -> bool {
    env_nonempty(name)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

#[cfg(feature = "s3")]
impl S3Config {
    /// Settings for `bucket` (and an optional prefix) from the usual
    /// variables: `AWS_ENDPOINT` (or `AWS_ENDPOINT_URL`), `AWS_REGION` (or
    /// `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`.
    pub fn from_env(bucket: impl Into<String>, prefix: Option<&str>) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: prefix.filter(|p| !p.is_empty()).map(str::to_string),
            endpoint: env_nonempty("AWS_ENDPOINT").or_else(|| env_nonempty("AWS_ENDPOINT_URL")),
            region: env_nonempty("AWS_REGION").or_else(|| env_nonempty("AWS_DEFAULT_REGION")),
            access_key_id: env_nonempty("AWS_ACCESS_KEY_ID"),
            secret_access_key: env_nonempty("AWS_SECRET_ACCESS_KEY"),
            session_token: env_nonempty("AWS_SESSION_TOKEN"),
            allow_http: env_flag("AWS_ALLOW_HTTP"),
            virtual_hosted_style: env_flag("AWS_VIRTUAL_HOSTED_STYLE_REQUEST"),
        }
    }
}

impl ObjectStoreBackend {
    /// A backend on `store`, called `name` in errors and metrics. Checks
    /// nothing yet (see the module docs on the probe).
    pub fn new(store: Arc<dyn ObjectStore>, name: &'static str) -> Self {
        ObjectStoreBackend {
            store,
            name,
            verified: Arc::default(),
        }
    }

    /// An S3-compatible bucket, named `s3`, with keys below `config.prefix`
    /// if one is given. Does not contact the server.
    #[cfg(feature = "s3")]
    pub fn s3(config: S3Config) -> Result<Self> {
        use object_store::aws::AmazonS3Builder;

        if config.bucket.is_empty() {
            return Err(Error::invalid("S3 bucket name is empty"));
        }
        let prefix = match config.prefix.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => None,
            Some(p) => Some(StateKey::new(p).map_err(|e| {
                Error::invalid(format!("S3 prefix \"{p}\" is not a valid key: {e}"))
            })?),
        };
        // object_store's S3 client is built on rustls with ring; installing
        // fails harmlessly when a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_allow_http(config.allow_http)
            .with_virtual_hosted_style_request(config.virtual_hosted_style);
        let region = config
            .region
            .clone()
            .or_else(|| env_nonempty("AWS_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        b = b.with_region(region);
        if let Some(e) = &config.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(k) = &config.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &config.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        if let Some(t) = &config.session_token {
            b = b.with_token(t);
        }
        let store = b.build().map_err(|e| match e {
            object_store::Error::Generic { source, .. } => {
                Error::invalid(format!("S3 configuration: {source}"))
            }
            other => Error::backend("s3", other),
        })?;
        let store: Arc<dyn ObjectStore> = match prefix {
            None => Arc::new(store),
            // object_store's own prefix wrapper: keys, listings and the
            // probe marker all live below the prefix.
            Some(p) => Arc::new(PrefixStore::new(store, store_path(p.as_str())?)),
        };
        Ok(ObjectStoreBackend::new(store, "s3"))
    }

    /// Trusts that the store honours conditional writes without checking in
    /// this process: for callers that know it was probed already, e.g.
    /// because it holds a registry, which `tenancy init` creates only after
    /// [`ObjectStoreBackend::probe_conditional_writes`] passed.
    pub fn assume_probed(self) -> Self {
        let _ = self.verified.set(());
        self
    }

    /// Runs the probe now (see the module docs) and leaves its marker; a
    /// store that ignores either condition is refused with
    /// [`Error::NotImplemented`]. `tenancy init` calls this; so can a check
    /// that wants to probe again.
    pub async fn probe_conditional_writes(&self) -> Result<()> {
        let key = format!("{PROBE_PREFIX}/{}", uuid::Uuid::new_v4().simple());
        let result = self.probe(&key).await;
        let cleanup = store_delete(&*self.store, self.name, &key).await;
        result?;
        cleanup?;
        let marker = format!(
            "{{\"probed_by\":\"tenancy {}\",\"probed_at\":\"{}\"}}",
            tenancy_core::TOOL_VERSION,
            chrono::Utc::now().to_rfc3339()
        );
        self.put_now(PROBE_MARKER, marker.into(), PutMode::Overwrite)
            .await?;
        let _ = self.verified.set(());
        Ok(())
    }

    /// Before the first conditional write of this process: the marker, or
    /// else the probe itself.
    async fn ensure_verified(&self) -> Result<()> {
        self.verified
            .get_or_try_init(|| async {
                match store_get(&*self.store, self.name, PROBE_MARKER).await? {
                    Some(_) => Ok(()),
                    None => self.probe_conditional_writes().await,
                }
            })
            .await
            .map(|_| ())
    }

    async fn probe(&self, key: &str) -> Result<()> {
        let backend = self.name();
        let v1 = self
            .put_now(key, Bytes::from_static(b"probe 1"), PutMode::Create)
            .await?;
        match self
            .put_now(key, Bytes::from_static(b"probe 2"), PutMode::Create)
            .await
        {
            Err(Error::AlreadyExists { .. }) => {}
            Ok(_) => {
                return Err(Error::not_implemented(format!(
                    "conditional writes: the {backend} store accepted a second create of the \
                     same object (If-None-Match is ignored); locks and the registry cannot be \
                     built on it safely"
                )))
            }
            Err(e) => return Err(e),
        }
        let wrong = Version(format!(
            "\"tenancy-probe-{}\"",
            uuid::Uuid::new_v4().simple()
        ));
        match self
            .put_now(key, Bytes::from_static(b"probe 3"), PutMode::Update(wrong))
            .await
        {
            Err(Error::Precondition { .. }) => {}
            Ok(_) => {
                return Err(Error::not_implemented(format!(
                    "conditional writes: the {backend} store accepted an update with a wrong \
                     version (If-Match is ignored); locks and the registry cannot be built on \
                     it safely"
                )))
            }
            Err(e) => return Err(e),
        }
        match store_get(&*self.store, self.name, key).await? {
            Some(obj) if obj.version == v1 && &obj.bytes[..] == b"probe 1" => Ok(()),
            _ => Err(Error::not_implemented(format!(
                "conditional writes: a refused write changed the probe object on the {backend} store"
            ))),
        }
    }

    /// True when the store holds the probe marker (one read; never probes).
    pub(crate) async fn has_probe_marker(&self) -> Result<bool> {
        Ok(store_get(&*self.store, self.name, PROBE_MARKER)
            .await?
            .is_some())
    }

    /// Probe objects other than the marker, with their last-modified
    /// times: what a probe that was killed before its cleanup leaves.
    pub(crate) async fn probe_leftovers(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let prefix = store_path(PROBE_PREFIX)?;
        let mut out = Vec::new();
        let mut listed = self.store.list(Some(&prefix));
        while let Some(item) = listed.next().await {
            let meta = item.map_err(|e| store_err(self.name, PROBE_PREFIX, e))?;
            let key = meta.location.to_string();
            if key != PROBE_MARKER {
                out.push((key, meta.last_modified));
            }
        }
        Ok(out)
    }

    /// Deletes a probe object found by [`ObjectStoreBackend::probe_leftovers`].
    pub(crate) async fn delete_probe_leftover(&self, key: &str) -> Result<()> {
        if !key.starts_with(&format!("{PROBE_PREFIX}/")) || key == PROBE_MARKER {
            return Err(Error::invalid(format!("{key} is no probe leftover")));
        }
        store_delete(&*self.store, self.name, key).await
    }

    async fn put_now(&self, key: &str, value: Bytes, mode: PutMode) -> Result<Version> {
        store_put(&*self.store, self.name, key, value, mode).await
    }
}

async fn store_get<S: ObjectStore + ?Sized>(
    store: &S,
    backend: &str,
    key: &str,
) -> Result<Option<Object>> {
    let path = store_path(key)?;
    let result = match store.get(&path).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_err(backend, key, e)),
    };
    let e_tag = result.meta.e_tag.clone();
    let bytes = match result.bytes().await {
        Ok(b) => b,
        // deleted between the head and the body
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_err(backend, key, e)),
    };
    let version = e_tag.ok_or_else(|| {
        Error::backend(
            backend,
            format!("the store returned no ETag for {key}; versions are required for CAS"),
        )
    })?;
    Ok(Some(Object {
        bytes,
        version: Version(version),
    }))
}

async fn store_put<S: ObjectStore + ?Sized>(
    store: &S,
    backend: &str,
    key: &str,
    value: Bytes,
    mode: PutMode,
) -> Result<Version> {
    let path = store_path(key)?;
    let is_update = matches!(mode, PutMode::Update(_));
    let mode = match mode {
        PutMode::Overwrite => object_store::PutMode::Overwrite,
        PutMode::Create => object_store::PutMode::Create,
        PutMode::Update(v) => object_store::PutMode::Update(UpdateVersion {
            e_tag: Some(v.0),
            version: None,
        }),
    };
    let opts = PutOptions {
        mode,
        ..Default::default()
    };
    match store.put_opts(&path, PutPayload::from(value), opts).await {
        Ok(r) => r.e_tag.map(Version).ok_or_else(|| {
            Error::backend(
                backend,
                format!("the store returned no ETag for {key}; versions are required for CAS"),
            )
        }),
        // an update of a missing object is a lost CAS, like a stale version
        Err(object_store::Error::NotFound { .. }) if is_update => Err(Error::precondition(
            format!("key {key} does not exist (update needs the current version)"),
        )),
        Err(e) => Err(store_err(backend, key, e)),
    }
}

async fn store_delete<S: ObjectStore + ?Sized>(store: &S, backend: &str, key: &str) -> Result<()> {
    let path = store_path(key)?;
    match store.delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_err(backend, key, e)),
    }
}

#[async_trait]
impl StateBackend for ObjectStoreBackend {
    fn name(&self) -> &str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            conditional_delete: false,
            ..Capabilities::ALL
        }
    }

    async fn get(&self, key: &StateKey) -> Result<Option<Object>> {
        store_get(&*self.store, self.name, key.as_str()).await
    }

    async fn put(&self, key: &StateKey, value: Bytes, mode: PutMode) -> Result<Version> {
        if !matches!(mode, PutMode::Overwrite) {
            self.ensure_verified().await?;
        }
        self.put_now(key.as_str(), value, mode).await
    }

    async fn delete(&self, key: &StateKey, mode: DeleteMode) -> Result<()> {
        match mode {
            DeleteMode::Any => store_delete(&*self.store, self.name, key.as_str()).await,
            DeleteMode::IfVersion(_) => Err(Error::not_implemented(format!(
                "conditional delete on the {} backend (object_store has no If-Match \
                 delete); check Capabilities::conditional_delete",
                self.name
            ))),
        }
    }

    fn list(&self, prefix: Option<&StateKey>) -> BoxStream<'_, Result<ListEntry>> {
        // objects whose names no key can have (foreign objects, probes) are
        // not part of this backend's key space
        store_list(&*self.store, self.name, prefix.cloned(), |k| {
            StateKey::new(k).ok()
        })
    }
}

fn store_list<'a, S: ObjectStore + ?Sized>(
    store: &'a S,
    backend: &'static str,
    prefix: Option<StateKey>,
    relative: impl Fn(&str) -> Option<StateKey> + Send + 'a,
) -> BoxStream<'a, Result<ListEntry>> {
    let path = match prefix.as_ref().map(|p| store_path(p.as_str())).transpose() {
        Ok(p) => p,
        Err(e) => return stream::once(async move { Err(e) }).boxed(),
    };
    let what = prefix.map(|p| p.to_string()).unwrap_or_default();
    store
        .list(path.as_ref())
        .filter_map(move |item| {
            let out = match item {
                // objects whose names no key can have (foreign objects,
                // probes) are not part of this backend's key space
                Ok(meta) => relative(meta.location.as_ref()).map(|key| {
                    Ok(ListEntry {
                        key,
                        size: meta.size,
                        last_modified: Some(meta.last_modified),
                    })
                }),
                Err(e) => Some(Err(store_err(backend, &what, e))),
            };
            futures::future::ready(out)
        })
        .boxed()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutResult,
    };
    use tenancy_core::StateBackendExt;

    /// An object store that ignores conditional writes (as S3-compatible
    /// stores without If-None-Match / If-Match support do).
    #[derive(Debug)]
    struct IgnoresConditions {
        inner: Arc<InMemory>,
        ignore_create: bool,
        /// When set, nothing is ignored (an honest store that counts).
        honest: bool,
        puts: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl std::fmt::Display for IgnoresConditions {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("IgnoresConditions")
        }
    }

    #[async_trait]
    impl ObjectStore for IgnoresConditions {
        async fn put_opts(
            &self,
            location: &StorePath,
            payload: PutPayload,
            mut opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let ignored = !self.honest
                && match opts.mode {
                    object_store::PutMode::Create => self.ignore_create,
                    object_store::PutMode::Update(_) => !self.ignore_create,
                    object_store::PutMode::Overwrite => false,
                };
            if ignored {
                opts.mode = object_store::PutMode::Overwrite;
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &StorePath,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &StorePath,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<StorePath>>,
        ) -> BoxStream<'static, object_store::Result<StorePath>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&StorePath>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&StorePath>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &StorePath,
            to: &StorePath,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn remote(ignore_create: bool) -> ObjectStoreBackend {
        fake(Arc::default(), ignore_create, false, Arc::default())
    }

    fn fake(
        inner: Arc<InMemory>,
        ignore_create: bool,
        honest: bool,
        puts: Arc<std::sync::atomic::AtomicUsize>,
    ) -> ObjectStoreBackend {
        let store = IgnoresConditions {
            inner,
            ignore_create,
            honest,
            puts,
        };
        ObjectStoreBackend::new(Arc::new(store), "fake")
    }

    fn puts(n: &std::sync::atomic::AtomicUsize) -> usize {
        n.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn reads_never_probe_and_the_first_conditional_write_probes_once_per_store() {
        let shared = Arc::new(InMemory::new());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let b = fake(shared.clone(), false, true, count.clone());
        let k = StateKey::new("k").unwrap();
        assert!(b.get(&k).await.unwrap().is_none());
        assert!(b.list_keys(None).await.unwrap().is_empty());
        assert_eq!(puts(&count), 0, "reads write nothing");
        b.put(&k, Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(puts(&count), 1, "a plain overwrite needs no probe");

        b.put(&k, Bytes::from_static(b"y"), PutMode::Create)
            .await
            .unwrap_err();
        // probe: 3 puts, marker: 1, the create itself: 1
        assert_eq!(puts(&count), 6, "the first conditional write probes");
        b.put(&k, Bytes::from_static(b"z"), PutMode::Create)
            .await
            .unwrap_err();
        assert_eq!(puts(&count), 7, "then never again in this process");

        // another process on the same store finds the marker: no probe
        let other = fake(shared.clone(), false, true, count.clone());
        other
            .put(
                &StateKey::new("k2").unwrap(),
                Bytes::from_static(b"1"),
                PutMode::Create,
            )
            .await
            .unwrap();
        assert_eq!(puts(&count), 8, "the marker spares the probe");
        assert!(
            !other
                .list_keys(None)
                .await
                .unwrap()
                .iter()
                .any(|k| k.as_str().contains("probe")),
            "the marker is not listed"
        );

        // told that the store was probed (it holds a registry): no read either
        let trusted = fake(Arc::default(), false, true, count.clone()).assume_probed();
        trusted
            .put(&k, Bytes::from_static(b"1"), PutMode::Create)
            .await
            .unwrap();
        assert_eq!(puts(&count), 9);
    }

    #[tokio::test]
    async fn the_first_conditional_write_on_a_store_that_ignores_conditions_is_refused() {
        for ignore_create in [true, false] {
            let b = remote(ignore_create);
            let k = StateKey::new("k").unwrap();
            let err = b
                .put(&k, Bytes::from_static(b"x"), PutMode::Create)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::NotImplemented { .. }), "{err}");
            assert!(b.get(&k).await.unwrap().is_none(), "nothing was written");
        }
    }

    #[tokio::test]
    async fn the_probe_refuses_stores_that_ignore_conditional_writes() {
        for ignore_create in [true, false] {
            let b = remote(ignore_create);
            let err = b.probe_conditional_writes().await.unwrap_err();
            assert!(matches!(err, Error::NotImplemented { .. }), "{err}");
            let msg = err.to_string();
            let header = if ignore_create {
                "If-None-Match"
            } else {
                "If-Match"
            };
            assert!(msg.contains(header), "{msg}");
            // the probe cleaned up after itself, and nothing is listed
            let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(inner(&b).list(None))
                .await
                .unwrap();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    fn inner(b: &ObjectStoreBackend) -> &dyn ObjectStore {
        &*b.store
    }

    #[tokio::test]
    async fn the_probe_accepts_honest_stores() {
        let b = ObjectStoreBackend::new(Arc::new(InMemory::new()), "memory");
        b.probe_conditional_writes().await.unwrap();
        let listed = b.list_keys(None).await.unwrap();
        assert!(listed.is_empty(), "the probe leaves nothing listable");
        let stored: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(inner(&b).list(None))
            .await
            .unwrap();
        assert_eq!(stored.len(), 1, "only the marker stays: {stored:?}");
    }

    #[tokio::test]
    async fn remote_stores_refuse_conditional_delete() {
        let b = fake(Arc::default(), false, true, Arc::default());
        let k = StateKey::new("k").unwrap();
        let v = b
            .put(&k, Bytes::from_static(b"x"), PutMode::Create)
            .await
            .unwrap();
        assert!(!b.capabilities().conditional_delete);
        let err = b.delete(&k, DeleteMode::IfVersion(v)).await.unwrap_err();
        assert!(matches!(err, Error::NotImplemented { .. }), "{err}");
        assert!(b.get(&k).await.unwrap().is_some());
    }
}
