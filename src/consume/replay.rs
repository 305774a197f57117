//! Dead letters produced again to their topics (`cronsumer dead-letters
//! replay`, the console's replay): each claimed first, so that two replays
//! of one at once produce it once, and no database connection is held
//! while producing.

use std::time::Duration;

use crate::config::Settings;
use crate::kafka::producer::{ProduceError, RecordProducer};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("being replayed now, or replayed already")]
    Taken,
}

/// How long a replay holds its dead letters: past the producer's longest
/// flush, after which a replay that died frees them.
const REPLAY_HOLD: Duration = Duration::from_secs(120);

/// Produces dead letters back to their topics, and marks them replayed once
/// every one is confirmed delivered; returns how many were. Each is claimed
/// first, so that two replays at once produce it once (those another replay
/// holds, or replayed already, are left out: [`ReplayError::Taken`] when
/// none is left). No database connection is held while producing.
pub fn replay(
    settings: &Settings,
    pool: &crate::db::Pool,
    targets: &[crate::db::dead_letters::DeadLetter],
) -> Result<u64, ReplayError> {
    use crate::db::{checkout, dead_letters};
    let ids: Vec<i64> = targets.iter().map(|d| d.id).collect();
    let claimed = dead_letters::claim_replay(&mut *checkout(pool, None)?, &ids, REPLAY_HOLD)?;
    if claimed.is_empty() {
        return Err(ReplayError::Taken);
    }
    let produced = (|| {
        let mut producer = RecordProducer::new(settings)?;
        for d in targets.iter().filter(|d| claimed.binary_search(&d.id).is_ok()) {
            producer.send(&d.topic, d.key.as_deref(), d.payload.as_deref().unwrap_or_default())?;
        }
        producer.finish("the dead letters' topics")
    })();
    dead_letters::replay_done(&mut *checkout(pool, None)?, &claimed, produced.is_ok())?;
    Ok(produced?)
}
