//! One storage seam for applications: [`Storage`] holds a session store, a job store and an
//! event bus behind trait objects, so that code serving requests names no store type.
//!
//! The store traits ([`SessionStore`], [`JobStore`], [`EventBus`]) stay generic and
//! zero-cost for code that knows its store. An application that chooses its store at run
//! time (the server's `STORAGE=memory|sled|redis`) erases it once, here, the way rustls'
//! `ClientConfig` holds `Arc<dyn StoresClientSessions>`: each store call then costs one
//! boxed future.
//!
//! ```
//! use std::sync::Arc;
//!
//! use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore, MemorySessionStore};
//! use heartbeat_core::{SharedClock, SharedHeartbeats, SharedJobs, Storage, SystemClock, TokenCodec};
//!
//! let storage = Storage::new(MemorySessionStore::new(), MemoryJobStore::new(), MemoryEventBus::new());
//! let clock: SharedClock = Arc::new(SystemClock);
//! // One concrete type for the services, whatever the stores are.
//! let heartbeats: SharedHeartbeats =
//!     storage.heartbeats(TokenCodec::new("shared key")?).with_clock(clock.clone());
//! let jobs: SharedJobs = storage.jobs().with_clock(clock);
//! # let _ = (heartbeats, jobs);
//! # Ok::<(), heartbeat_core::KeyError>(())
//! ```

use crate::analytics::{Index, IndexKey};
use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::decision::SessionWrite;
use crate::jobs::{
    BusError, EventBus, EventId, EventStream, Job, JobEvent, JobId, JobStore, Jobs, LiveStream,
    NewJob, Owner,
};
use crate::notice::SessionNotice;
use crate::session::{PlayRecord, ProgressRecord};
use crate::store::{Commit, Loaded, Retention, SessionStore, StoreError};
use crate::{Clock, Heartbeats, Id, Timestamp, TokenCodec};

/// A future boxed for a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A clock shared by every service of an application.
pub type SharedClock = Arc<dyn Clock>;

/// A session store of any type, behind an `Arc`: a [`SessionStore`] again. Clones share
/// the store.
//
// A newtype rather than an alias of `Arc<dyn DynSessionStore>`: with the trait
// implemented on `Arc<dyn …>` itself, rustc cannot prove the futures of generic callers
// `Send` ("implementation is not general enough", the `dyn` object's lifetime).
#[derive(Clone)]
pub struct SharedSessionStore(Arc<dyn DynSessionStore>);

/// A job store of any type, behind an `Arc`: a [`JobStore`] again.
#[derive(Clone)]
pub struct SharedJobStore(Arc<dyn DynJobStore>);

/// An event bus of any type, behind an `Arc`: an [`EventBus`] again.
#[derive(Clone)]
pub struct SharedEventBus(Arc<dyn DynEventBus>);

macro_rules! shared_debug {
    ($($name:ident),*) => {$(
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    )*};
}
shared_debug!(SharedSessionStore, SharedJobStore, SharedEventBus);

/// The heartbeat service over a store and a clock chosen at run time.
pub type SharedHeartbeats = Heartbeats<SharedSessionStore, SharedClock>;
/// The jobs service over a store, a bus and a clock chosen at run time.
pub type SharedJobs = Jobs<SharedJobStore, SharedEventBus, SharedClock>;

/// The version of a loaded state, whatever the store's own version type is.
pub struct AnyVersion(Box<dyn Any + Send + Sync>);

impl std::fmt::Debug for AnyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnyVersion")
    }
}

impl AnyVersion {
    fn new<V: Send + Sync + 'static>(version: V) -> Self {
        Self(Box::new(version))
    }

    fn get<V: 'static>(&self) -> Result<&V, StoreError> {
        self.0.downcast_ref().ok_or_else(|| StoreError::Backend {
            message: "a version loaded from another store was passed to commit".to_owned(),
            source: None,
        })
    }
}

/// [`SessionStore`] as a trait object. Every session store implements it; use it through
/// [`SharedSessionStore`], which is a [`SessionStore`] again.
pub trait DynSessionStore: Send + Sync + 'static {
    /// [`SessionStore::load`].
    fn dyn_load<'a>(
        &'a self,
        user: &'a Id,
    ) -> BoxFuture<'a, Result<Loaded<AnyVersion>, StoreError>>;
    /// [`SessionStore::commit`].
    fn dyn_commit<'a>(
        &'a self,
        user: &'a Id,
        version: &'a AnyVersion,
        write: &'a SessionWrite,
        limits: &'a Retention,
    ) -> BoxFuture<'a, Result<Commit, StoreError>>;
    /// [`SessionStore::progress`].
    fn dyn_progress<'a>(
        &'a self,
        user: &'a Id,
        asset: &'a Id,
    ) -> BoxFuture<'a, Result<Option<ProgressRecord>, StoreError>>;
    /// [`SessionStore::history`].
    fn dyn_history<'a>(
        &'a self,
        user: &'a Id,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PlayRecord>, StoreError>>;
    /// [`SessionStore::index_range`].
    fn dyn_index_range<'a>(
        &'a self,
        index: Index,
        after: &'a IndexKey,
        before: &'a IndexKey,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<IndexKey>, StoreError>>;
    /// [`SessionStore::index_count`].
    fn dyn_index_count<'a>(
        &'a self,
        index: Index,
        from: &'a IndexKey,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// [`SessionStore::notify`].
    fn dyn_notify<'a>(&'a self, notice: &'a SessionNotice)
    -> BoxFuture<'a, Result<(), StoreError>>;
    /// [`SessionStore::watch`].
    fn dyn_watch(&self, user: &Id, session_id: &str) -> LiveStream<SessionNotice>;
    /// [`SessionStore::ping`].
    fn dyn_ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// [`SessionStore::flush`].
    fn dyn_flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

impl<S> DynSessionStore for S
where
    S: SessionStore,
{
    fn dyn_load<'a>(
        &'a self,
        user: &'a Id,
    ) -> BoxFuture<'a, Result<Loaded<AnyVersion>, StoreError>> {
        Box::pin(async move {
            let loaded = self.load(user).await?;
            Ok(Loaded {
                sessions: loaded.sessions,
                version: AnyVersion::new(loaded.version),
            })
        })
    }

    fn dyn_commit<'a>(
        &'a self,
        user: &'a Id,
        version: &'a AnyVersion,
        write: &'a SessionWrite,
        limits: &'a Retention,
    ) -> BoxFuture<'a, Result<Commit, StoreError>> {
        Box::pin(async move { self.commit(user, version.get()?, write, limits).await })
    }

    fn dyn_progress<'a>(
        &'a self,
        user: &'a Id,
        asset: &'a Id,
    ) -> BoxFuture<'a, Result<Option<ProgressRecord>, StoreError>> {
        Box::pin(self.progress(user, asset))
    }

    fn dyn_history<'a>(
        &'a self,
        user: &'a Id,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PlayRecord>, StoreError>> {
        Box::pin(self.history(user, limit))
    }

    fn dyn_index_range<'a>(
        &'a self,
        index: Index,
        after: &'a IndexKey,
        before: &'a IndexKey,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<IndexKey>, StoreError>> {
        Box::pin(self.index_range(index, after, before, limit))
    }

    fn dyn_index_count<'a>(
        &'a self,
        index: Index,
        from: &'a IndexKey,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.index_count(index, from))
    }

    fn dyn_notify<'a>(
        &'a self,
        notice: &'a SessionNotice,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.notify(notice))
    }

    fn dyn_watch(&self, user: &Id, session_id: &str) -> LiveStream<SessionNotice> {
        self.watch(user, session_id)
    }

    fn dyn_ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.ping())
    }

    fn dyn_flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.flush())
    }
}

impl SessionStore for SharedSessionStore {
    type Version = AnyVersion;

    async fn load(&self, user: &Id) -> Result<Loaded<AnyVersion>, StoreError> {
        self.0.dyn_load(user).await
    }

    async fn commit(
        &self,
        user: &Id,
        version: &AnyVersion,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<Commit, StoreError> {
        self.0.dyn_commit(user, version, write, limits).await
    }

    async fn progress(&self, user: &Id, asset: &Id) -> Result<Option<ProgressRecord>, StoreError> {
        self.0.dyn_progress(user, asset).await
    }

    async fn history(&self, user: &Id, limit: usize) -> Result<Vec<PlayRecord>, StoreError> {
        self.0.dyn_history(user, limit).await
    }

    async fn index_range(
        &self,
        index: Index,
        after: &IndexKey,
        before: &IndexKey,
        limit: usize,
    ) -> Result<Vec<IndexKey>, StoreError> {
        self.0.dyn_index_range(index, after, before, limit).await
    }

    async fn index_count(&self, index: Index, from: &IndexKey) -> Result<u64, StoreError> {
        self.0.dyn_index_count(index, from).await
    }

    async fn notify(&self, notice: &SessionNotice) -> Result<(), StoreError> {
        self.0.dyn_notify(notice).await
    }

    fn watch(&self, user: &Id, session_id: &str) -> LiveStream<SessionNotice> {
        self.0.dyn_watch(user, session_id)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.dyn_ping().await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.0.dyn_flush().await
    }
}

/// [`JobStore`] as a trait object; use it through [`SharedJobStore`].
pub trait DynJobStore: Send + Sync + 'static {
    /// [`JobStore::create`].
    fn dyn_create(&self, job: NewJob) -> BoxFuture<'_, Result<Job, StoreError>>;
    /// [`JobStore::get`].
    fn dyn_get(&self, id: JobId) -> BoxFuture<'_, Result<Option<(Job, AnyVersion)>, StoreError>>;
    /// [`JobStore::compare_and_set`].
    fn dyn_compare_and_set<'a>(
        &'a self,
        version: &'a AnyVersion,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<Commit, StoreError>>;
    /// [`JobStore::list_by_owner`].
    fn dyn_list_by_owner<'a>(
        &'a self,
        owner: &'a Owner,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Job>, StoreError>>;
    /// [`JobStore::due`].
    fn dyn_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Job, AnyVersion)>, StoreError>>;
}

impl<J> DynJobStore for J
where
    J: JobStore,
{
    fn dyn_create(&self, job: NewJob) -> BoxFuture<'_, Result<Job, StoreError>> {
        Box::pin(self.create(job))
    }

    fn dyn_get(&self, id: JobId) -> BoxFuture<'_, Result<Option<(Job, AnyVersion)>, StoreError>> {
        Box::pin(async move {
            let found = self.get(id).await?;
            Ok(found.map(|(job, version)| (job, AnyVersion::new(version))))
        })
    }

    fn dyn_compare_and_set<'a>(
        &'a self,
        version: &'a AnyVersion,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<Commit, StoreError>> {
        Box::pin(async move { self.compare_and_set(version.get()?, job).await })
    }

    fn dyn_list_by_owner<'a>(
        &'a self,
        owner: &'a Owner,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Job>, StoreError>> {
        Box::pin(self.list_by_owner(owner, limit))
    }

    fn dyn_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Job, AnyVersion)>, StoreError>> {
        Box::pin(async move {
            let due = self.due(now, limit).await?;
            Ok(due
                .into_iter()
                .map(|(job, version)| (job, AnyVersion::new(version)))
                .collect())
        })
    }
}

impl JobStore for SharedJobStore {
    type Version = AnyVersion;

    async fn create(&self, job: NewJob) -> Result<Job, StoreError> {
        self.0.dyn_create(job).await
    }

    async fn get(&self, id: JobId) -> Result<Option<(Job, AnyVersion)>, StoreError> {
        self.0.dyn_get(id).await
    }

    async fn compare_and_set(&self, version: &AnyVersion, job: &Job) -> Result<Commit, StoreError> {
        self.0.dyn_compare_and_set(version, job).await
    }

    async fn list_by_owner(&self, owner: &Owner, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.0.dyn_list_by_owner(owner, limit).await
    }

    async fn due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Job, AnyVersion)>, StoreError> {
        self.0.dyn_due(now, limit).await
    }
}

/// [`EventBus`] as a trait object; use it through [`SharedEventBus`].
pub trait DynEventBus: Send + Sync + 'static {
    /// [`EventBus::publish`].
    fn dyn_publish<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<JobEvent, BusError>>;
    /// [`EventBus::subscribe`].
    fn dyn_subscribe<'a>(
        &'a self,
        owner: &'a Owner,
    ) -> BoxFuture<'a, Result<EventStream, BusError>>;
    /// [`EventBus::replay`].
    fn dyn_replay<'a>(
        &'a self,
        owner: &'a Owner,
        after: Option<EventId>,
    ) -> BoxFuture<'a, Result<Vec<JobEvent>, BusError>>;
}

impl<B: EventBus> DynEventBus for B {
    fn dyn_publish<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<JobEvent, BusError>> {
        Box::pin(self.publish(job))
    }

    fn dyn_subscribe<'a>(
        &'a self,
        owner: &'a Owner,
    ) -> BoxFuture<'a, Result<EventStream, BusError>> {
        Box::pin(self.subscribe(owner))
    }

    fn dyn_replay<'a>(
        &'a self,
        owner: &'a Owner,
        after: Option<EventId>,
    ) -> BoxFuture<'a, Result<Vec<JobEvent>, BusError>> {
        Box::pin(self.replay(owner, after))
    }
}

impl EventBus for SharedEventBus {
    async fn publish(&self, job: &Job) -> Result<JobEvent, BusError> {
        self.0.dyn_publish(job).await
    }

    async fn subscribe(&self, owner: &Owner) -> Result<EventStream, BusError> {
        self.0.dyn_subscribe(owner).await
    }

    async fn replay(
        &self,
        owner: &Owner,
        after: Option<EventId>,
    ) -> Result<Vec<JobEvent>, BusError> {
        self.0.dyn_replay(owner, after).await
    }
}

/// A session store, a job store and an event bus, of whatever types, behind one value.
#[derive(Clone)]
pub struct Storage {
    sessions: SharedSessionStore,
    jobs: SharedJobStore,
    bus: SharedEventBus,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

impl Storage {
    /// Storage over three stores (they may be clones of one handle, as the sled and Redis
    /// stores are).
    pub fn new<S, J, B>(sessions: S, jobs: J, bus: B) -> Self
    where
        S: SessionStore,
        J: JobStore,
        B: EventBus,
    {
        Self {
            sessions: SharedSessionStore(Arc::new(sessions)),
            jobs: SharedJobStore(Arc::new(jobs)),
            bus: SharedEventBus(Arc::new(bus)),
        }
    }

    /// The session store.
    pub fn sessions(&self) -> &SharedSessionStore {
        &self.sessions
    }

    /// The job store.
    pub fn job_store(&self) -> &SharedJobStore {
        &self.jobs
    }

    /// The event bus.
    pub fn bus(&self) -> &SharedEventBus {
        &self.bus
    }

    /// The heartbeat service over this storage, with `codec`, on the system clock.
    pub fn heartbeats(&self, codec: TokenCodec) -> Heartbeats<SharedSessionStore> {
        Heartbeats::new(codec, self.sessions.clone())
    }

    /// The jobs service over this storage, on the system clock.
    pub fn jobs(&self) -> Jobs<SharedJobStore, SharedEventBus> {
        Jobs::new(self.jobs.clone(), self.bus.clone())
    }
}
