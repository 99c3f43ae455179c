// rkyv keys are little-endian, so their byte order is not their `Ord` order: tables keyed
// with `RkyvFormat` have no `range`, neither directly nor through a snapshot.
use typed_kv::*;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageBuilder::new(dir.path()).build().unwrap();
    let table = storage
        .new_table::<u64, u32>("numbers")
        .with_key_format(RkyvFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    for entry in table.range(1..10).unwrap() {
        let (key, value) = entry.unwrap();
        println!("{key}: {}", *value);
    }
    let snapshot = storage.read().unwrap();
    for entry in snapshot.range(&table, 1..10).unwrap() {
        let (key, value) = entry.unwrap();
        println!("{key}: {}", *value);
    }
}
