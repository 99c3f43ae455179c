//! `typed-kv compact`: reclaim space, and say how much.

use typed_kv::{CompactionReport, Storage};

use crate::human::bytes;
use crate::progress::Progress;
use crate::Failure;

pub(crate) fn run(storage: &Storage) -> Result<(), Failure> {
    let spinner = Progress::spinner("compacting");
    let report = storage.compact();
    spinner.finish();
    match report? {
        CompactionReport::Compacted { before, after } => println!(
            "compacted {} ({}): {} -> {} ({} freed)",
            storage.path().display(),
            storage.backend(),
            bytes(before),
            bytes(after),
            bytes(before.saturating_sub(after))
        ),
        CompactionReport::AlreadyCompact { size } => {
            println!(
                "{} ({}) is already compact: {}",
                storage.path().display(),
                storage.backend(),
                bytes(size)
            )
        }
        CompactionReport::NotSupported { reason } => {
            println!("{} cannot compact on demand: {reason}", storage.backend())
        }
        other => println!("{other:?}"),
    }
    Ok(())
}
