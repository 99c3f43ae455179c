//! A typed `get` allocates nothing beyond what the engine's own `get` allocates: no boxing,
//! no key buffer, no copy of the value. Counted with a counting global allocator, typed and
//! raw reads side by side on the same store.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use typed_kv::{BytesFormat, DatabaseBackend, OrderedFormat, PostcardFormat, StorageBuilder};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while running `f` (the median of several runs, so that
/// one-off lazy initialisation inside an engine does not count).
fn allocations(mut f: impl FnMut()) -> u64 {
    f(); // warm up caches and thread-locals
    let mut counts: Vec<u64> = (0..9)
        .map(|_| {
            let before = ALLOCATIONS.with(Cell::get);
            f();
            ALLOCATIONS.with(Cell::get) - before
        })
        .collect();
    counts.sort_unstable();
    counts[counts.len() / 2]
}

fn typed_get_allocates_like_the_engine(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let storage = StorageBuilder::new(&path).with_backend(backend).build().unwrap();
    let blobs = storage
        .new_table::<u64, Vec<u8>>("blobs")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BytesFormat::new())
        .build()
        .unwrap();
    let numbers = storage
        .new_table::<u64, u64>("numbers")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    for i in 0..100u64 {
        blobs.put(&i, &vec![i as u8; 150]).unwrap();
        numbers.put(&i, &(i * 3)).unwrap();
    }
    let typed = allocations(|| {
        let g = blobs.get(&42).unwrap().unwrap();
        assert_eq!(g.len(), 150);
    });
    let typed_decoded = allocations(|| {
        assert_eq!(*numbers.get(&42).unwrap().unwrap(), 126);
    });
    drop((blobs, numbers, storage));

    // The same read through the engine's own API, on the same files.
    let key = 42u64.to_be_bytes();
    let raw = match backend {
        #[cfg(feature = "native")]
        DatabaseBackend::Native => {
            let db = typed_kv::engine::Db::open(path.join("native"), Default::default()).unwrap();
            let table = db.find_table("blobs").unwrap();
            allocations(|| {
                let v = db.get(&table, &key).unwrap().unwrap();
                assert_eq!(v.len(), 150);
            })
        }
        #[cfg(feature = "redb")]
        DatabaseBackend::Redb => {
            use redb::ReadableDatabase;
            let db = redb::Database::open(path.join("redb").join("data.redb")).unwrap();
            let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("blobs");
            allocations(|| {
                let txn = db.begin_read().unwrap();
                let table = txn.open_table(def).unwrap();
                let g = table.get_owned(&key[..]).unwrap().unwrap();
                assert_eq!(g.value().len(), 150);
            })
        }
        #[cfg(feature = "sled")]
        DatabaseBackend::Sled => {
            let started = std::time::Instant::now();
            let db = loop {
                match sled::open(path.join("sled")) {
                    Ok(db) => break db,
                    Err(_) if started.elapsed().as_secs() < 5 => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            };
            let tree = db.open_tree("blobs").unwrap();
            allocations(|| {
                let v = tree.get(key).unwrap().unwrap();
                assert_eq!(v.len(), 150);
            })
        }
        #[cfg(feature = "rocksdb")]
        DatabaseBackend::RocksDb => {
            let dir = path.join("rocksdb");
            let opts = rocksdb::Options::default();
            let cfs = rocksdb::DB::list_cf(&opts, &dir).unwrap();
            let db = rocksdb::DB::open_cf(&opts, &dir, &cfs).unwrap();
            allocations(|| {
                let cf = db.cf_handle("blobs").unwrap();
                let v = db.get_pinned_cf(&cf, key).unwrap().unwrap();
                assert_eq!(v.len(), 150);
            })
        }
        other => panic!("no raw API for {other}"),
    };
    eprintln!(
        "{backend}: allocations per get: typed bytes {typed}, typed postcard {typed_decoded}, engine {raw}"
    );
    assert!(typed <= raw, "{backend}: typed get made {typed} allocations, the engine's own get {raw}");
    assert!(typed_decoded <= raw, "{backend}: typed get of a postcard value made {typed_decoded}, raw {raw}");
}

#[cfg(feature = "native")]
#[test]
fn native() {
    typed_get_allocates_like_the_engine(DatabaseBackend::Native);
}

/// On native, an rkyv `get` allocates nothing at all and copies nothing: the archived value
/// is read where it lies in the segment's memory mapping.
#[cfg(feature = "native")]
#[test]
fn native_rkyv_get_allocates_nothing_and_reads_inside_the_mapping() {
    use typed_kv::RkyvFormat;
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageBuilder::new(dir.path()).with_backend(DatabaseBackend::Native).build().unwrap();
    let records = storage
        .new_table::<u64, Vec<String>>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()
        .unwrap();
    for i in 0..200u64 {
        // Odd-length values and keys, so that unaligned packing would show.
        let value: Vec<String> = (0..(i % 5)).map(|j| "x".repeat((i + j) as usize % 13)).collect();
        records.put(&i, &value).unwrap();
    }
    let count = allocations(|| {
        let guard = records.get(&77).unwrap().unwrap();
        assert_eq!(guard.len(), 2);
    });
    assert_eq!(count, 0, "an rkyv get on native allocated");
    let guard = records.get(&77).unwrap().unwrap();
    let address = (&*guard) as *const _ as *const u8 as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let inside = maps.lines().any(|line| {
        let Some((range, rest)) = line.split_once(' ') else { return false };
        let Some((start, end)) = range.split_once('-') else { return false };
        let (start, end) =
            (usize::from_str_radix(start, 16).unwrap(), usize::from_str_radix(end, 16).unwrap());
        rest.contains("/native/seg-") && (start..end).contains(&address)
    });
    assert!(inside, "the archived value at {address:#x} is not inside a segment mapping");
    assert_eq!(storage.aligned_copies(), 0, "native copied a value to align it");
}

#[cfg(feature = "redb")]
#[test]
fn redb() {
    typed_get_allocates_like_the_engine(DatabaseBackend::Redb);
}

#[cfg(feature = "sled")]
#[test]
fn sled() {
    typed_get_allocates_like_the_engine(DatabaseBackend::Sled);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb() {
    typed_get_allocates_like_the_engine(DatabaseBackend::RocksDb);
}
