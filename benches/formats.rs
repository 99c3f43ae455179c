//! Value formats on a realistic record (`Company`: strings, a vector of strings, numbers):
//! encoding, making a guard (what `Table::get` does past the engine), and reading one field.
//!
//! - `encode/*`: `ValueFormat::to_bytes` into a reused buffer, as `put` does.
//! - `guard/*`: `ValueFormat::check`, the work of making a guard: rkyv validates with
//!   bytecheck, flatbuffers runs its verifier, bincode and postcard decode.
//! - `read_field/*`: from stored bytes to the `name` and `employees` fields. `rkyv_validated`
//!   is `rkyv::access` each time; `rkyv_trusted` is `rkyv::access_unchecked` on bytes
//!   validated once, which is what a guard's deref does; the flatbuffers pair likewise
//!   (`root` verifies, `root_unchecked` is `FlatbuffersView::root`); bincode and postcard
//!   have to decode the whole record.
//!
//! Each iteration handles 64 different records (throughput in records).
//!
//! ```sh
//! cargo bench --bench formats -- --quick
//! ```

#[path = "../examples/support/company.rs"]
mod company;

use std::hint::black_box;

use company::{ArchivedCompany, Company, CompanyTable};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use typed_kv::{BincodeFormat, FlatbuffersFormat, PostcardFormat, RkyvFormat, ValueFormat};

const RECORDS: u64 = 64;

fn records() -> Vec<Company> {
    (0..RECORDS).map(company::sample).collect()
}

/// Encodes every record with `format`; rkyv's into 16-byte-aligned buffers, as typed-kv's
/// guards give them.
fn encode_all<F: ValueFormat<Company>>(format: &F, records: &[Company]) -> Vec<AlignedVec<16>> {
    records
        .iter()
        .map(|r| {
            let mut bytes = Vec::new();
            format.to_bytes(r, &mut bytes).expect("encodes");
            let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(&bytes);
            aligned
        })
        .collect()
}

fn bench_encode(c: &mut Criterion) {
    let records = records();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(RECORDS));
    fn run<F: ValueFormat<Company>>(format: F, records: &[Company]) -> impl FnMut() -> usize + '_ {
        let mut out = Vec::with_capacity(1024);
        move || {
            let mut total = 0;
            for record in records {
                out.clear();
                format.to_bytes(black_box(record), &mut out).expect("encodes");
                total += out.len();
            }
            total
        }
    }
    let mut rkyv = run(RkyvFormat::new(), &records);
    group.bench_function("rkyv", |b| b.iter(&mut rkyv));
    let mut flatbuffers = run(FlatbuffersFormat::new(), &records);
    group.bench_function("flatbuffers", |b| b.iter(&mut flatbuffers));
    let mut bincode = run(BincodeFormat::new(), &records);
    group.bench_function("bincode", |b| b.iter(&mut bincode));
    let mut postcard = run(PostcardFormat::new(), &records);
    group.bench_function("postcard", |b| b.iter(&mut postcard));
    group.finish();
}

fn bench_guard(c: &mut Criterion) {
    let records = records();
    let mut group = c.benchmark_group("guard");
    group.throughput(Throughput::Elements(RECORDS));
    fn run<F: ValueFormat<Company>>(format: F, stored: &[AlignedVec<16>]) -> impl FnMut() + '_ {
        move || {
            for bytes in stored {
                black_box(format.check(black_box(bytes)).expect("valid"));
            }
        }
    }
    let rkyv = encode_all(&RkyvFormat::new(), &records);
    group.bench_function("rkyv", |b| b.iter(run(RkyvFormat::new(), &rkyv)));
    let flatbuffers = encode_all(&FlatbuffersFormat::new(), &records);
    group.bench_function("flatbuffers", |b| b.iter(run(FlatbuffersFormat::new(), &flatbuffers)));
    let bincode = encode_all(&BincodeFormat::new(), &records);
    group.bench_function("bincode", |b| b.iter(run(BincodeFormat::new(), &bincode)));
    let postcard = encode_all(&PostcardFormat::new(), &records);
    group.bench_function("postcard", |b| b.iter(run(PostcardFormat::new(), &postcard)));
    group.finish();
}

fn bench_read_field(c: &mut Criterion) {
    let records = records();
    let mut group = c.benchmark_group("read_field");
    group.throughput(Throughput::Elements(RECORDS));

    let rkyv = encode_all(&RkyvFormat::new(), &records);
    group.bench_function("rkyv_validated", |b| {
        b.iter(|| {
            let mut total = 0u64;
            for bytes in &rkyv {
                let company =
                    rkyv::access::<ArchivedCompany, rancor::Error>(black_box(bytes)).expect("valid");
                total += company.name.len() as u64 + u64::from(company.employees.to_native());
            }
            total
        })
    });
    for bytes in &rkyv {
        rkyv::access::<ArchivedCompany, rancor::Error>(bytes).expect("valid");
    }
    group.bench_function("rkyv_trusted", |b| {
        b.iter(|| {
            let mut total = 0u64;
            for bytes in &rkyv {
                // SAFETY: every buffer was validated by `rkyv::access` above and is aligned
                // (`AlignedVec<16>`); nothing changed it since, as for a guard's deref.
                let company = unsafe { rkyv::access_unchecked::<ArchivedCompany>(black_box(bytes)) };
                total += company.name.len() as u64 + u64::from(company.employees.to_native());
            }
            total
        })
    });

    let flatbuffers = encode_all(&FlatbuffersFormat::new(), &records);
    group.bench_function("flatbuffers_verified", |b| {
        b.iter(|| {
            let mut total = 0u64;
            for bytes in &flatbuffers {
                let company = flatbuffers::root::<CompanyTable>(black_box(bytes)).expect("valid");
                total += company.name().len() as u64 + u64::from(company.employees());
            }
            total
        })
    });
    group.bench_function("flatbuffers_trusted", |b| {
        b.iter(|| {
            let mut total = 0u64;
            for bytes in &flatbuffers {
                // SAFETY: the buffers were verified when made (`encode_all` output of a
                // finished builder; `flatbuffers_verified` above verifies the same bytes),
                // which is what `FlatbuffersView::root` relies on too.
                let company = unsafe { flatbuffers::root_unchecked::<CompanyTable>(black_box(bytes)) };
                total += company.name().len() as u64 + u64::from(company.employees());
            }
            total
        })
    });

    let bincode = encode_all(&BincodeFormat::new(), &records);
    group.bench_function("bincode", |b| {
        b.iter(|| {
            let mut total = 0u64;
            for bytes in &bincode {
                let company: Company =
                    ValueFormat::<Company>::check(&BincodeFormat::new(), black_box(bytes)).expect("valid");
                total += company.name.len() as u64 + u64::from(company.employees);
            }
            total
        })
    });
    let postcard = encode_all(&PostcardFormat::new(), &records);
    group.bench_function("postcard", |b| {
        b.iter(|| {
            let mut total = 0u64;
            for bytes in &postcard {
                let company: Company =
                    ValueFormat::<Company>::check(&PostcardFormat::new(), black_box(bytes)).expect("valid");
                total += company.name.len() as u64 + u64::from(company.employees);
            }
            total
        })
    });
    group.finish();

    let size =
        |stored: &[AlignedVec<16>]| stored.iter().map(|b| b.len()).sum::<usize>() as f64 / RECORDS as f64;
    println!(
        "mean encoded size of the {RECORDS} records: rkyv {:.0} B, flatbuffers {:.0} B, bincode {:.0} B, postcard {:.0} B",
        size(&rkyv),
        size(&flatbuffers),
        size(&bincode),
        size(&postcard)
    );
}

criterion_group!(benches, bench_encode, bench_guard, bench_read_field);
criterion_main!(benches);
