//! `OrderedFormat`, the order-preserving key format: encoding and decoding of integers,
//! strings and tuples, 1,000 keys per iteration (throughput in keys).
//!
//! ```sh
//! cargo bench --bench ordered_keys -- --quick
//! ```

#[path = "../examples/support/company.rs"]
mod company;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use typed_kv::{KeyFormat, OrderedFormat};

const KEYS: usize = 1_000;

/// Encodes and decodes `keys` under `name` in the `encode` and `decode` groups.
fn bench_type<K>(c: &mut Criterion, name: &str, keys: &[K])
where
    K: PartialEq + std::fmt::Debug,
    OrderedFormat: KeyFormat<K>,
{
    let format = OrderedFormat::new();
    let encoded: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            let mut out = Vec::new();
            format.to_bytes(k, &mut out).expect("encodes");
            out
        })
        .collect();
    for (key, bytes) in keys.iter().zip(&encoded) {
        assert_eq!(&format.from_bytes(bytes).expect("decodes"), key, "round trip");
    }

    let mut group = c.benchmark_group("ordered_keys");
    group.throughput(Throughput::Elements(keys.len() as u64));
    let mut out = Vec::with_capacity(256);
    group.bench_function(format!("encode/{name}"), |b| {
        b.iter(|| {
            let mut total = 0;
            for key in keys {
                out.clear();
                format.to_bytes(black_box(key), &mut out).expect("encodes");
                total += out.len();
            }
            total
        })
    });
    group.bench_function(format!("decode/{name}"), |b| {
        b.iter(|| {
            for bytes in &encoded {
                black_box(format.from_bytes(black_box(bytes)).expect("decodes"));
            }
        })
    });
    group.finish();
}

fn bench_ordered_keys(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(7);
    let unsigned: Vec<u64> = (0..KEYS).map(|_| rng.u64(..)).collect();
    let signed: Vec<i64> = (0..KEYS).map(|_| rng.i64(..)).collect();
    // Company names: 10 to 40 characters, the typical string key.
    let strings: Vec<String> = (0..KEYS as u64).map(|i| company::sample(i).name).collect();
    // A composite key: (CIK, form type, year), strings escaped inside the tuple.
    let tuples: Vec<(u64, String, i32)> = (0..KEYS as u64)
        .map(|i| {
            (
                rng.u64(..1 << 40),
                ["10-K", "10-Q", "8-K", "S-1"][(i % 4) as usize].to_owned(),
                rng.i32(1990..2030),
            )
        })
        .collect();

    bench_type(c, "u64", &unsigned);
    bench_type(c, "i64", &signed);
    bench_type(c, "string", &strings);
    bench_type(c, "tuple_u64_string_i32", &tuples);
}

criterion_group!(benches, bench_ordered_keys);
criterion_main!(benches);
