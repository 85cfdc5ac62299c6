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

use crate::sessions::analytics::{Index, IndexKey, IndexReads};
use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::jobs::{
    EventBus, EventId, EventStream, Job, JobEvent, JobId, JobStore, Jobs, NewJob, Owner,
};
use crate::live::{BusError, LiveStream};
use crate::sessions::SessionWrite;
use crate::sessions::notice::SessionNotice;
use crate::sessions::{AnalyticsStore, Loaded, NoticeBus, Retention, SessionStore};
use crate::sessions::{PlayRecord, ProgressRecord};
use crate::store::{Commit, StoreError, StoreHealth};
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

/// Writes a store trait's object-safe twin once: the `dyn` trait (each `async fn` boxed),
/// its implementation for every store, and the shared handle's implementation of the
/// store trait that forwards to it. Plain methods take one line each; methods that wrap or
/// unwrap a store's own version type are written by hand in the `by hand` block.
macro_rules! erase {
    (
        $(#[$doc:meta])*
        trait $dyn:ident$(: $first:ident $(+ $rest:ident)*)? erases $store:ident for $shared:ident {
            $(async fn $am:ident<$lt:lifetime>($($aa:ident: $at:ty),* $(,)?) -> $ar:ty;)*
            $(fn $sm:ident($($sa:ident: $st:ty),* $(,)?) -> $sr:ty;)*
        }
        $(by hand {
            dyn { $($dyn_items:tt)* }
            each { $($each_items:tt)* }
            shared { $($shared_items:tt)* }
        })?
    ) => {
        $(#[$doc])*
        pub trait $dyn: $($first + $($rest +)*)? Send + Sync + 'static {
            $(
                #[doc = concat!("[`", stringify!($store), "::", stringify!($am), "`], boxed.")]
                fn $am<$lt>(&$lt self, $($aa: $at),*) -> BoxFuture<$lt, $ar>;
            )*
            $(
                #[doc = concat!("[`", stringify!($store), "::", stringify!($sm), "`].")]
                fn $sm(&self, $($sa: $st),*) -> $sr;
            )*
            $($($dyn_items)*)?
        }

        impl<T: $store> $dyn for T {
            $(
                fn $am<$lt>(&$lt self, $($aa: $at),*) -> BoxFuture<$lt, $ar> {
                    Box::pin(<T as $store>::$am(self, $($aa),*))
                }
            )*
            $(
                fn $sm(&self, $($sa: $st),*) -> $sr {
                    <T as $store>::$sm(self, $($sa),*)
                }
            )*
            $($($each_items)*)?
        }

        impl $store for $shared {
            $(
                fn $am<$lt>(&$lt self, $($aa: $at),*) -> impl Future<Output = $ar> + Send + $lt {
                    <dyn $dyn as $dyn>::$am(&*self.0, $($aa),*)
                }
            )*
            $(
                fn $sm(&self, $($sa: $st),*) -> $sr {
                    <dyn $dyn as $dyn>::$sm(&*self.0, $($sa),*)
                }
            )*
            $($($shared_items)*)?
        }
    };
}

erase! {
    /// [`AnalyticsStore`] as a trait object.
    trait DynAnalyticsStore erases AnalyticsStore for SharedSessionStore {
        async fn index_range<'a>(
            index: Index,
            after: &'a IndexKey,
            before: &'a IndexKey,
            limit: usize,
        ) -> Result<Vec<IndexKey>, StoreError>;
        async fn index_count<'a>(index: Index, from: &'a IndexKey) -> Result<u64, StoreError>;
        fn index_reads() -> IndexReads;
    }
}

erase! {
    /// [`NoticeBus`] as a trait object.
    trait DynNoticeBus erases NoticeBus for SharedSessionStore {
        async fn notify<'a>(notice: &'a SessionNotice) -> Result<(), StoreError>;
        async fn watch<'a>(user: &'a Id, session_id: &'a str) -> Result<LiveStream<SessionNotice>, StoreError>;
    }
}

erase! {
    /// [`SessionStore`] as a trait object. Every session store implements it; use it
    /// through [`SharedSessionStore`], which is a [`SessionStore`] again.
    trait DynSessionStore: DynAnalyticsStore + DynNoticeBus erases SessionStore for SharedSessionStore {
        async fn progress<'a>(user: &'a Id, asset: &'a Id) -> Result<Option<ProgressRecord>, StoreError>;
        async fn history<'a>(user: &'a Id, limit: usize) -> Result<Vec<PlayRecord>, StoreError>;
        async fn ping<'a>() -> Result<StoreHealth, StoreError>;
        async fn flush<'a>() -> Result<(), StoreError>;
    }
    by hand {
        dyn {
            /// [`SessionStore::load`], the version erased.
            fn load<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<Loaded<AnyVersion>, StoreError>>;
            /// [`SessionStore::commit`] with a version [`load`](Self::load) gave.
            fn commit<'a>(
                &'a self,
                user: &'a Id,
                version: &'a AnyVersion,
                write: &'a SessionWrite,
                limits: &'a Retention,
            ) -> BoxFuture<'a, Result<Commit, StoreError>>;
        }
        each {
            fn load<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<Loaded<AnyVersion>, StoreError>> {
                Box::pin(async move {
                    let loaded = <T as SessionStore>::load(self, user).await?;
                    Ok(Loaded {
                        sessions: loaded.sessions,
                        version: AnyVersion::new(loaded.version),
                    })
                })
            }

            fn commit<'a>(
                &'a self,
                user: &'a Id,
                version: &'a AnyVersion,
                write: &'a SessionWrite,
                limits: &'a Retention,
            ) -> BoxFuture<'a, Result<Commit, StoreError>> {
                Box::pin(async move {
                    <T as SessionStore>::commit(self, user, version.get()?, write, limits).await
                })
            }
        }
        shared {
            type Version = AnyVersion;

            async fn load(&self, user: &Id) -> Result<Loaded<AnyVersion>, StoreError> {
                <dyn DynSessionStore as DynSessionStore>::load(&*self.0, user).await
            }

            async fn commit(
                &self,
                user: &Id,
                version: &AnyVersion,
                write: &SessionWrite,
                limits: &Retention,
            ) -> Result<Commit, StoreError> {
                <dyn DynSessionStore as DynSessionStore>::commit(&*self.0, user, version, write, limits).await
            }
        }
    }
}

erase! {
    /// [`JobStore`] as a trait object; use it through [`SharedJobStore`].
    trait DynJobStore erases JobStore for SharedJobStore {
        async fn create<'a>(job: NewJob) -> Result<Job, StoreError>;
        async fn list_by_owner<'a>(owner: &'a Owner, limit: usize) -> Result<Vec<Job>, StoreError>;
    }
    by hand {
        dyn {
            /// [`JobStore::get`], the version erased.
            fn get(&self, id: JobId) -> BoxFuture<'_, Result<Option<(Job, AnyVersion)>, StoreError>>;
            /// [`JobStore::compare_and_set`] with a version [`get`](Self::get) or
            /// [`due`](Self::due) gave.
            fn compare_and_set<'a>(
                &'a self,
                version: &'a AnyVersion,
                job: &'a Job,
            ) -> BoxFuture<'a, Result<Commit, StoreError>>;
            /// [`JobStore::due`], the versions erased.
            fn due(
                &self,
                now: Timestamp,
                limit: usize,
            ) -> BoxFuture<'_, Result<Vec<(Job, AnyVersion)>, StoreError>>;
        }
        each {
            fn get(&self, id: JobId) -> BoxFuture<'_, Result<Option<(Job, AnyVersion)>, StoreError>> {
                Box::pin(async move {
                    let found = <T as JobStore>::get(self, id).await?;
                    Ok(found.map(|(job, version)| (job, AnyVersion::new(version))))
                })
            }

            fn compare_and_set<'a>(
                &'a self,
                version: &'a AnyVersion,
                job: &'a Job,
            ) -> BoxFuture<'a, Result<Commit, StoreError>> {
                Box::pin(async move { <T as JobStore>::compare_and_set(self, version.get()?, job).await })
            }

            fn due(
                &self,
                now: Timestamp,
                limit: usize,
            ) -> BoxFuture<'_, Result<Vec<(Job, AnyVersion)>, StoreError>> {
                Box::pin(async move {
                    let due = <T as JobStore>::due(self, now, limit).await?;
                    Ok(due
                        .into_iter()
                        .map(|(job, version)| (job, AnyVersion::new(version)))
                        .collect())
                })
            }
        }
        shared {
            type Version = AnyVersion;

            async fn get(&self, id: JobId) -> Result<Option<(Job, AnyVersion)>, StoreError> {
                <dyn DynJobStore as DynJobStore>::get(&*self.0, id).await
            }

            async fn compare_and_set(&self, version: &AnyVersion, job: &Job) -> Result<Commit, StoreError> {
                <dyn DynJobStore as DynJobStore>::compare_and_set(&*self.0, version, job).await
            }

            async fn due(
                &self,
                now: Timestamp,
                limit: usize,
            ) -> Result<Vec<(Job, AnyVersion)>, StoreError> {
                <dyn DynJobStore as DynJobStore>::due(&*self.0, now, limit).await
            }
        }
    }
}

erase! {
    /// [`EventBus`] as a trait object; use it through [`SharedEventBus`].
    trait DynEventBus erases EventBus for SharedEventBus {
        async fn publish<'a>(job: &'a Job) -> Result<JobEvent, BusError>;
        async fn subscribe<'a>(owner: &'a Owner) -> Result<EventStream, BusError>;
        async fn replay<'a>(owner: &'a Owner, after: Option<EventId>) -> Result<Vec<JobEvent>, BusError>;
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
