// An `Entries` iterator from a snapshot reads the snapshot's state: it cannot be kept after
// the snapshot is dropped.
use typed_kv::*;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageBuilder::new(dir.path()).build().unwrap();
    let table = storage
        .new_table::<u64, String>("names")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    let snapshot = storage.read().unwrap();
    let entries = snapshot.iter(&table).unwrap();
    drop(snapshot);
    for entry in entries {
        let (key, value) = entry.unwrap();
        println!("{key}: {}", *value);
    }
}
