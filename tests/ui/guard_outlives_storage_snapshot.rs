// A guard read through a snapshot (`ReadTxn`) borrows the snapshot: it can outlive neither a
// temporary snapshot nor one dropped explicitly.
use typed_kv::*;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Record {
    name: String,
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageBuilder::new(dir.path()).build().unwrap();
    let table = storage
        .new_table::<u64, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()
        .unwrap();

    // The snapshot is a temporary, dropped at the end of the statement.
    let guard = storage.read().unwrap().get(&table, &1).unwrap().unwrap();
    println!("{}", guard.name);

    // The snapshot is dropped explicitly while the guard is still used.
    let snapshot = storage.read().unwrap();
    let guard = snapshot.get(&table, &1).unwrap().unwrap();
    drop(snapshot);
    println!("{}", guard.name);
}
