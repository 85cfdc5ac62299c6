//! The layout version a Redis holds, in `<namespace>hb_layout:version`:
//!
//! | version | meaning |
//! |---|---|
//! | none, `1` | keys of builds before the slot tag may be there: reads consult their names too |
//! | `2` | `migrate-redis` moved them (or the Redis was empty when an instance first started): one name per read |
//!
//! A version above [`CURRENT`] was written by a newer build, whose keys this build does
//! not know: it refuses to start.

use super::Layout;

/// The layout this build writes.
pub(crate) const CURRENT: u32 = 2;

/// What a Redis's layout version key says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Earlier builds' keys may be there (no version, or `1`).
    Earlier,
    /// Only this build's names ([`CURRENT`]).
    Current,
}

/// Reads the version key's value; the error says what to do.
pub(crate) fn parse(value: Option<&str>) -> Result<Stored, String> {
    let Some(value) = value else {
        return Ok(Stored::Earlier);
    };
    // Exactly as builds write it: a number without sign or leading zeros.
    let number = value.trim();
    let canonical = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && !(number.len() > 1 && number.starts_with('0'));
    match number {
        "1" => Ok(Stored::Earlier),
        "2" => Ok(Stored::Current),
        newer if canonical && newer != "0" => Err(format!(
            "the Redis holds keys of layout version {newer}, written by a newer heartbeat; \
             this build knows versions up to {CURRENT}: upgrade this instance to the build \
             the others run"
        )),
        _ => Err(format!(
            "the layout version key holds {value:?}, which no heartbeat build writes: \
             set it to 1 and run `heartbeat-server migrate-redis` again"
        )),
    }
}

impl Layout {
    /// The layout version key.
    pub(crate) fn version_key(&self) -> String {
        format!("{}hb_layout:version", self.namespace)
    }

    /// Where an unfinished migration keeps its progress: a hash of each master's scan
    /// cursor (by the master's run id), so that it resumes there.
    pub(crate) fn migration_key(&self) -> String {
        format!("{}hb_layout:migration", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_and_newer_ones_refused() {
        assert_eq!(parse(None), Ok(Stored::Earlier));
        assert_eq!(parse(Some("1")), Ok(Stored::Earlier));
        assert_eq!(parse(Some("2")), Ok(Stored::Current));
        let newer = parse(Some("3")).unwrap_err();
        assert!(newer.contains("upgrade this instance"), "{newer}");
        let garbage = parse(Some("two")).unwrap_err();
        assert!(garbage.contains("\"two\""), "{garbage}");
        assert!(parse(Some("0")).is_err());
        assert_eq!(parse(Some("2\n")), Ok(Stored::Current));
        for not_written in ["02", "+2", "2.0", "-1", ""] {
            let error = parse(Some(not_written)).unwrap_err();
            assert!(
                error.contains("no heartbeat build writes"),
                "{not_written}: {error}"
            );
        }
        let huge = parse(Some("99999999999999999999")).unwrap_err();
        assert!(huge.contains("upgrade this instance"), "{huge}");
    }
}
