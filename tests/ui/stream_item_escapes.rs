// `with_stream` lends a snapshot to the closure only: its items (key, guard) borrow it and
// cannot be returned out of the closure.
use futures::executor::block_on;
use futures::StreamExt;
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
    let items = table.with_stream(|s| block_on(s.collect::<Vec<_>>())).unwrap();
    for (key, guard) in &items {
        println!("{key}: {}", guard.name);
    }
}
