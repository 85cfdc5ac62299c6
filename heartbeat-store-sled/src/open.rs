//! Opening a database directory, with errors that say what is wrong and what to do.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::SledConfig;
use crate::keys::META_FORMAT;

/// The format marker written into every database this crate creates or opens: layout 2
/// keeps the progress of the assets a user played lately in the user's record.
const FORMAT: &[u8] = b"heartbeat-sled/2";
/// Layout 1 (builds before layout 2): every progress entry under its own key. Its data
/// reads as layout 2 as it is, so opening it only rewrites the marker; builds of layout 1
/// then refuse the database by its marker instead of reading stale progress.
const LAYOUT_1: &[u8] = b"heartbeat-sled/1";
/// The lock file inside the database directory.
const LOCK_FILE: &str = "heartbeat.lock";
/// The tree holding everything.
const TREE: &str = "heartbeat";

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process has the database open.
    #[error(
        "the sled database at {path} is in use by another process; stop it, or point SLED_PATH \
         at another directory"
    )]
    InUse {
        /// The database directory.
        path: PathBuf,
    },
    /// The path exists but is not a heartbeat database.
    #[error("{path} is not a heartbeat sled database: {reason}")]
    NotADatabase {
        /// The path given.
        path: PathBuf,
        /// What was found there.
        reason: String,
    },
    /// The database files could not be read or are damaged.
    #[error(
        "the sled database at {path} cannot be opened: {source}; restore it from a backup or \
         move it away to start empty"
    )]
    Damaged {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A newer build wrote the database, in a layout this one does not know.
    #[error(
        "the sled database at {path} was written by a newer heartbeat build (format \
         `{format}`): run that build or a later one, or restore a backup taken before it"
    )]
    Newer {
        /// The database directory.
        path: PathBuf,
        /// Its format marker.
        format: String,
    },
    /// Opened to read ([`SledConfig::migrate`] off) where no database is yet.
    #[error(
        "there is no heartbeat sled database at {path} yet: the server creates it when it \
         starts"
    )]
    NoDatabase {
        /// The path given.
        path: PathBuf,
    },
    /// The file system refused (permissions, disk full, ...).
    #[error("cannot open the sled database at {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

pub(crate) struct Opened {
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
    pub(crate) lock: File,
    /// Of an earlier layout, left as it is (`SledConfig::migrate` off).
    pub(crate) earlier_layout: bool,
}

/// How long to wait for sled's own file lock once ours is held.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled. Our lock file is held by then, so no other handle can be open: if sled's own
/// lock is still taken, a handle of this process that was just dropped is still shutting
/// down (sled's flusher thread releases the lock a moment after the drop). Wait for it.
fn open_sled(config: &SledConfig) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(Some(config.flush_every_ms.max(1)))
            .open();
        match opened {
            // sled reports its lock only as text: "could not acquire lock on ...".
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && started.elapsed() < SLED_LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// True when `path` holds something to open: anything but a missing path or an empty
/// directory, where opening creates a database.
pub(crate) fn holds_database(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => !is_empty(path).unwrap_or(false),
        Ok(_) => true,
        Err(_) => false,
    }
}

pub(crate) fn open(config: &SledConfig) -> Result<Opened, OpenError> {
    let path = &config.path;
    if !config.migrate && !holds_database(path) {
        // A process that only reads creates nothing: a database it made would be of this
        // build's layout, which the build that runs now may not open.
        return Err(OpenError::NoDatabase { path: path.clone() });
    }
    let io_error = |source| OpenError::Io {
        path: path.clone(),
        source,
    };
    let not_a_database = |reason: &str| OpenError::NotADatabase {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => {
            return Err(not_a_database(
                "it is a file, and a database is a directory",
            ));
        }
        Ok(_) if !is_empty(path).map_err(io_error)? && !path.join("conf").exists() => {
            return Err(not_a_database(
                "the directory holds other files; give an empty or new directory",
            ));
        }
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path).map_err(io_error)?;
        }
        Err(error) => return Err(io_error(error)),
    }
    let lock = lock(path)?;
    let db = open_sled(config).map_err(|source| damaged(path, source))?;
    let tree = db.open_tree(TREE).map_err(|source| damaged(path, source))?;
    let write_marker = || {
        tree.insert(META_FORMAT, FORMAT)
            .map_err(|source| damaged(path, source))?;
        db.flush().map_err(|source| damaged(path, source)).map(drop)
    };
    let earlier_layout = match tree
        .get(META_FORMAT)
        .map_err(|source| damaged(path, source))?
    {
        Some(format) if format == FORMAT => false,
        Some(format) if format == LAYOUT_1 && !config.migrate => true,
        Some(format) if format == LAYOUT_1 => {
            write_marker()?;
            false
        }
        Some(other) if other.starts_with(b"heartbeat-sled/") => {
            return Err(OpenError::Newer {
                path: path.clone(),
                format: String::from_utf8_lossy(&other).into_owned(),
            });
        }
        Some(other) => {
            return Err(not_a_database(&format!(
                "it was written by an unknown format `{}`",
                String::from_utf8_lossy(&other)
            )));
        }
        None if tree.is_empty() && db.is_empty() && db.tree_names().len() <= 2 => {
            write_marker()?;
            false
        }
        None => {
            return Err(not_a_database(
                "it is a sled database of another program (no heartbeat format marker)",
            ));
        }
    };
    Ok(Opened {
        db,
        tree,
        lock,
        earlier_layout,
    })
}

/// True when `dir` holds nothing but (perhaps) our lock file.
fn is_empty(dir: &Path) -> io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        if entry?.file_name() != LOCK_FILE {
            return Ok(false);
        }
    }
    Ok(true)
}

fn lock(dir: &Path) -> Result<File, OpenError> {
    let lock_path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| OpenError::Io {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(OpenError::InUse {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(OpenError::Io {
            path: lock_path,
            source,
        }),
    }
}

fn damaged(path: &Path, source: sled::Error) -> OpenError {
    OpenError::Damaged {
        path: path.to_path_buf(),
        source,
    }
}
