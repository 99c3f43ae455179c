// The archived value a guard derefs to lives in the guard's bytes: a reference to it cannot
// outlive the guard.
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
    let r: &ArchivedRecord = {
        let g = table.get(&1).unwrap().unwrap();
        &*g
    };
    println!("{}", r.name);
}
