//! Key order is a property of the key format, not of the engine: the same keys iterate in
//! the same order on every backend, equal to the keys' `Ord` (floats: `total_cmp`).

mod common;

use std::cmp::Ordering;
use std::fmt::Debug;

use typed_kv::{DatabaseBackend, OrderedFormat, OrderedKey, PostcardFormat, Storage};

/// Stores `keys` (shuffled) in a fresh table and returns them in iteration order, checking
/// that each value is its key's index in `keys`.
fn stored_order<K>(storage: &Storage, name: &str, keys: &[K]) -> Vec<K>
where
    K: OrderedKey + Clone + Debug + 'static,
{
    let table = storage
        .new_table::<K, u32>(name)
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    // Insert in a scrambled order so that insertion order cannot fake the result.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|i| (i * 7919) % keys.len());
    table.put_all(order.iter().map(|&i| (keys[i].clone(), i as u32))).unwrap();
    table
        .iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            assert_eq!(encoded(&keys[*v as usize]), encoded(&k), "value points back to its key");
            k
        })
        .collect()
}

/// Keys compared by encoding: floats (NaN) are not `PartialEq` to themselves.
fn encoded<K: OrderedKey>(key: &K) -> Vec<u8> {
    let mut out = Vec::new();
    key.encode_ordered(&mut out);
    out
}

fn sorted_by<K: Clone>(keys: &[K], cmp: impl Fn(&K, &K) -> Ordering) -> Vec<K> {
    let mut sorted = keys.to_vec();
    sorted.sort_by(cmp);
    sorted
}

fn floats() -> Vec<f64> {
    vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        -f64::NAN,
        1e-300,
        -1e300,
        2.5,
        2.4999999,
    ]
}

fn strings() -> Vec<String> {
    ["", "\0", "\0\0", "a", "a\0", "a\0b", "a\u{1}", "ab", "b", "ba", "é", "\u{10FFFF}", "A", "Z\0"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn keys_iterate_in_ord_order(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(backend, dir.path());

    let ints: Vec<i64> = vec![0, -1, 1, i64::MIN, i64::MAX, -256, 255, 256, -255, 1 << 40, -(1 << 40)];
    assert_eq!(stored_order(&storage, "i64", &ints), sorted_by(&ints, Ord::cmp));

    let wide: Vec<i128> = vec![0, -1, i128::MIN, i128::MAX, 1 << 100, -(1 << 100)];
    assert_eq!(stored_order(&storage, "i128", &wide), sorted_by(&wide, Ord::cmp));

    let unsigned: Vec<u32> = vec![0, 1, 255, 256, 65535, 65536, u32::MAX];
    assert_eq!(stored_order(&storage, "u32", &unsigned), sorted_by(&unsigned, Ord::cmp));

    // Floats compare bit for bit (NaN != NaN), so compare their bits.
    let fs = floats();
    let got: Vec<u64> = stored_order(&storage, "f64", &fs).iter().map(|f| f.to_bits()).collect();
    let want: Vec<u64> = sorted_by(&fs, f64::total_cmp).iter().map(|f| f.to_bits()).collect();
    assert_eq!(got, want);
    let neg_zero_first = stored_order(&storage, "zeros", &[0.0f64, -0.0]);
    assert!(neg_zero_first[0].is_sign_negative() && neg_zero_first[1].is_sign_positive());

    let ss = strings();
    assert_eq!(stored_order(&storage, "strings", &ss), sorted_by(&ss, Ord::cmp));

    let bytes: Vec<Vec<u8>> =
        vec![vec![], vec![0], vec![0, 0], vec![0, 255], vec![1], vec![255], vec![255, 0]];
    assert_eq!(stored_order(&storage, "bytes", &bytes), sorted_by(&bytes, Ord::cmp));

    let mut tuples: Vec<(i32, String, i64)> = Vec::new();
    for a in [-2, 0, 3] {
        for s in ["", "a", "a\0", "ab"] {
            for c in [-1i64, 0, 7] {
                tuples.push((a, s.to_string(), c));
            }
        }
    }
    assert_eq!(stored_order(&storage, "tuples", &tuples), sorted_by(&tuples, Ord::cmp));

    let mixed: Vec<(String, f64)> =
        strings().into_iter().flat_map(|s| floats().into_iter().map(move |f| (s.clone(), f))).collect();
    let cmp = |a: &(String, f64), b: &(String, f64)| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1));
    let got: Vec<(String, u64)> =
        stored_order(&storage, "mixed", &mixed).into_iter().map(|(s, f)| (s, f.to_bits())).collect();
    let want: Vec<(String, u64)> =
        sorted_by(&mixed, cmp).into_iter().map(|(s, f)| (s, f.to_bits())).collect();
    assert_eq!(got, want);

    let options: Vec<Option<i8>> = vec![Some(-1), None, Some(0), Some(i8::MIN), Some(i8::MAX)];
    assert_eq!(stored_order(&storage, "options", &options), sorted_by(&options, Ord::cmp));
}

per_backend!(keys_iterate_in_ord_order);
