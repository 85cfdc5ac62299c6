//! Key layout: one sled tree, the first byte says what a key holds, variable parts are
//! length-prefixed (so no id can run into the next part) and numbers are big-endian (so
//! keys sort by them).

use heartbeat_core::jobs::{EventId, JobId, Owner};
use heartbeat_core::sessions::analytics::{Index, IndexKey};
use heartbeat_core::{Id, Timestamp};

const SESSIONS: u8 = b'S';
const PROGRESS: u8 = b'P';
const HISTORY: u8 = b'H';
const JOB: u8 = b'J';
const OWNER_JOB: u8 = b'O';
const DUE: u8 = b'D';
const EVENT: u8 = b'E';
const FINISHED: u8 = b'F';
const REFUSAL: u8 = b'R';
/// Counters and the format marker.
pub(crate) const META_FORMAT: &[u8] = b"M:format";
pub(crate) const META_JOB_ID: &[u8] = b"M:job_id";

fn with_part(mut key: Vec<u8>, part: &[u8]) -> Vec<u8> {
    // Ids are at most 256 bytes and owners 128: two bytes of length always suffice.
    let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
    key.reserve(2 + part.len());
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(part);
    key
}

/// User ids are keyed by their text, as the Node server's Redis keys are: `13` and `"13"`
/// are one user.
fn id_part(key: Vec<u8>, id: &Id) -> Vec<u8> {
    id.with_text(|text| with_part(key, text.as_bytes()))
}

pub(crate) const SESSIONS_PREFIX: &[u8] = &[SESSIONS];
pub(crate) const PROGRESS_PREFIX: &[u8] = &[PROGRESS];
pub(crate) const HISTORY_PREFIX: &[u8] = &[HISTORY];

/// The prefix of an analytics index's keys.
pub(crate) fn index_prefix(index: Index) -> u8 {
    match index {
        Index::Finished => FINISHED,
        Index::Refusals => REFUSAL,
    }
}

/// An analytics index entry: its prefix, then the entry's text, which sorts by time.
pub(crate) fn index(index: Index, key: &IndexKey) -> Vec<u8> {
    let mut bytes = vec![index_prefix(index)];
    bytes.extend_from_slice(key.as_str().as_bytes());
    bytes
}

pub(crate) fn sessions(user: &Id) -> Vec<u8> {
    id_part(vec![SESSIONS], user)
}

/// The user whose sessions key `key` is (as its text, which names the user: see
/// [`id_part`]); `None` for any other key.
pub(crate) fn user_of_sessions(key: &[u8]) -> Option<Id> {
    let rest = key.strip_prefix(SESSIONS_PREFIX)?;
    let (len, text) = rest.split_first_chunk::<2>()?;
    (usize::from(u16::from_be_bytes(*len)) == text.len())
        .then(|| std::str::from_utf8(text).ok())
        .flatten()
        .map(|text| Id::Str(text.to_owned()))
}

/// The progress key of `asset` (its id's text) for `user`.
pub(crate) fn progress(user: &Id, asset: &str) -> Vec<u8> {
    with_part(id_part(vec![PROGRESS], user), asset.as_bytes())
}

/// The progress key of `asset` for the user whose sessions key is `sessions_key`.
pub(crate) fn progress_beside(sessions_key: &[u8], asset: &str) -> Vec<u8> {
    let mut key = vec![PROGRESS];
    key.extend_from_slice(sessions_key.get(1..).unwrap_or_default());
    with_part(key, asset.as_bytes())
}

pub(crate) fn history(user: &Id) -> Vec<u8> {
    id_part(vec![HISTORY], user)
}

pub(crate) fn job(id: JobId) -> Vec<u8> {
    let mut key = vec![JOB];
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

pub(crate) fn owner_jobs(owner: &Owner) -> Vec<u8> {
    with_part(vec![OWNER_JOB], owner.as_str().as_bytes())
}

pub(crate) fn owner_job(owner: &Owner, id: JobId) -> Vec<u8> {
    let mut key = owner_jobs(owner);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

pub(crate) const DUE_PREFIX: &[u8] = &[DUE];
pub(crate) const JOB_PREFIX: &[u8] = &[JOB];
pub(crate) const EVENT_PREFIX: &[u8] = &[EVENT];

/// Due entries sort by time, then id. Signed millis are shifted so negatives sort first.
pub(crate) fn due(at: Timestamp, id: JobId) -> Vec<u8> {
    let mut key = vec![DUE];
    let shifted = (at.unix_millis() as u64) ^ (1 << 63);
    key.extend_from_slice(&shifted.to_be_bytes());
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// The first due key after every entry due at or before `at`.
pub(crate) fn due_end(at: Timestamp) -> Vec<u8> {
    due(at, JobId(u64::MAX))
}

/// The job id at the end of a due key or an owner's job key.
pub(crate) fn trailing_u64(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

pub(crate) fn owner_events(owner: &Owner) -> Vec<u8> {
    with_part(vec![EVENT], owner.as_str().as_bytes())
}

pub(crate) fn event(owner: &Owner, id: EventId) -> Vec<u8> {
    let mut key = owner_events(owner);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_sort_by_time_then_id_also_before_1970() {
        let early = Timestamp::from_unix_millis(-5).unwrap();
        let late = Timestamp::from_unix_millis(5).unwrap();
        assert!(due(early, JobId(9)) < due(late, JobId(1)));
        assert!(due(late, JobId(1)) < due(late, JobId(2)));
        assert!(due(late, JobId(u64::MAX)) < due_end(Timestamp::from_unix_millis(6).unwrap()));
        assert_eq!(trailing_u64(&due(late, JobId(7))), Some(7));
    }

    #[test]
    fn length_prefixes_keep_ids_apart() {
        let a = progress(&Id::Str("ab".into()), "c");
        let b = progress(&Id::Str("a".into()), "bc");
        assert_ne!(a, b);
        assert_eq!(
            progress_beside(&sessions(&Id::Int(13)), "c"),
            progress(&Id::Int(13), "c")
        );
        assert_eq!(sessions(&Id::Int(13)), sessions(&Id::Str("13".into())));
    }

    #[test]
    fn a_sessions_key_names_its_user() {
        assert_eq!(
            user_of_sessions(&sessions(&Id::Int(13))),
            Some(Id::Str("13".into()))
        );
        let user = Id::Str("ü ser".into());
        assert_eq!(user_of_sessions(&sessions(&user)), Some(user));
        assert_eq!(
            user_of_sessions(&history(&Id::Int(13))),
            None,
            "another kind of key"
        );
        let mut longer = sessions(&Id::Int(13));
        longer.push(b'x');
        assert_eq!(user_of_sessions(&longer), None, "its length must match");
    }
}
