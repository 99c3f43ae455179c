//! The flatbuffers value format: round trips through the generated `Company` table, and
//! `check` refusing every kind of bad bytes without panicking.

#[path = "../examples/support/company.rs"]
mod company;

use company::{Company, CompanyTable};
use typed_kv::{FlatbuffersFormat, FlatbuffersRecord, FlatbuffersView, ValueFormat};

const FORMAT: FlatbuffersFormat = FlatbuffersFormat::new();

fn encode(company: &Company) -> Vec<u8> {
    let mut out = Vec::new();
    FORMAT.to_bytes(company, &mut out).expect("to_bytes");
    out
}

/// `check` for `Company`; errors come back as their message, after checking they name the
/// format.
fn check(bytes: &[u8]) -> Result<(), String> {
    <FlatbuffersFormat as ValueFormat<Company>>::check(&FORMAT, bytes).map_err(|err| {
        assert_eq!(err.format, "flatbuffers");
        err.to_string()
    })
}

/// Checks `bytes`, then reads them back as an owned `Company` through the view.
fn decode(bytes: &[u8]) -> Company {
    check(bytes).expect("check accepts what to_bytes wrote");
    // SAFETY: `check` just accepted these exact bytes (and `Checked` is `()`).
    let view: &FlatbuffersView<Company> =
        unsafe { <FlatbuffersFormat as ValueFormat<Company>>::view(&(), bytes) };
    assert_eq!(view.as_bytes(), bytes);
    assert_eq!(view.as_bytes().as_ptr(), bytes.as_ptr(), "view must not copy");
    Company::from_table(&view.root())
}

/// A small deterministic generator (splitmix64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn stamps() {
    assert_eq!(<FlatbuffersFormat as ValueFormat<Company>>::ID, "flatbuffers");
    assert_eq!(<FlatbuffersFormat as ValueFormat<Company>>::ALIGN, 1);
    const { assert!(<FlatbuffersFormat as ValueFormat<Company>>::BORROWS_BYTES) };
    assert_eq!(<FlatbuffersFormat as ValueFormat<Company>>::flags(&FORMAT), "typed_kv_example.Company");
    assert_eq!(Company::ROOT_NAME, "typed_kv_example.Company");
}

#[test]
fn round_trip_samples() {
    for i in 0..500 {
        let company = company::sample(i);
        let bytes = encode(&company);
        assert_eq!(decode(&bytes), company, "sample {i}");
    }
}

#[test]
fn root_reads_fields_in_place() {
    let company = company::sample(42);
    let bytes = encode(&company);
    check(&bytes).unwrap();
    // SAFETY: `check` just accepted these exact bytes.
    let view = unsafe { <FlatbuffersFormat as ValueFormat<Company>>::view(&(), &bytes) };
    let root: CompanyTable<'_> = view.root();
    assert_eq!(root.name(), company.name);
    assert_eq!(root.cik(), company.cik);
    assert_eq!(root.revenue(), company.revenue);
    assert_eq!(root.employees(), company.employees);
    assert_eq!(root.founded_year(), company.founded_year);
    let tickers: Vec<&str> = root.tickers().unwrap().iter().collect();
    assert_eq!(tickers, company.tickers);
    // The name points into the stored bytes: no copy.
    let range = bytes.as_ptr_range();
    assert!(range.contains(&root.name().as_ptr()));
    // Debug goes through the generated table.
    assert!(format!("{view:?}").contains(&company.name));
}

#[test]
fn samples_vary() {
    let samples: Vec<Company> = (0..200).map(company::sample).collect();
    assert_eq!(company::sample(7), company::sample(7), "deterministic");
    for count in 0..=3 {
        assert!(samples.iter().any(|c| c.tickers.len() == count), "{count} tickers");
    }
    let names: std::collections::HashSet<_> = samples.iter().map(|c| &c.name).collect();
    assert_eq!(names.len(), samples.len());
    assert!(samples.iter().any(|c| c.employees < 1_000));
    assert!(samples.iter().any(|c| c.employees > 100_000));
    assert!(samples.iter().all(|c| (1850..2025).contains(&c.founded_year)));
}

#[test]
fn edge_values_round_trip() {
    let empty = Company {
        name: String::new(),
        cik: 0,
        revenue: 0.0,
        employees: 0,
        tickers: Vec::new(),
        founded_year: 0,
    };
    assert_eq!(decode(&encode(&empty)), empty);

    let extreme = Company {
        name: "Zürich Ünïcödé AG \u{1F3E6}\0with nul".to_owned(),
        cik: u64::MAX,
        revenue: -1.5e300,
        employees: u32::MAX,
        tickers: vec![String::new(), "Ä".to_owned()],
        founded_year: i16::MIN,
    };
    assert_eq!(decode(&encode(&extreme)), extreme);

    let nan = Company { revenue: f64::NAN, ..company::sample(1) };
    assert!(decode(&encode(&nan)).revenue.is_nan());
}

#[test]
fn large_values_round_trip() {
    let mut many = company::sample(3);
    many.tickers = (0..100_000).map(|i| format!("T{i:05}")).collect();
    assert_eq!(decode(&encode(&many)), many);

    let mut long = company::sample(4);
    long.name = "x".repeat(1 << 20);
    let bytes = encode(&long);
    assert!(bytes.len() > 1 << 20);
    assert_eq!(decode(&bytes), long);

    // The thread's builder survives a huge value (it is dropped, not kept) and still works.
    let small = company::sample(5);
    assert_eq!(decode(&encode(&small)), small);
}

#[test]
fn to_bytes_is_deterministic_and_reuse_safe() {
    let a = company::sample(10);
    let b = company::sample(11);
    let first = encode(&a);
    let _ = encode(&b);
    assert_eq!(encode(&a), first, "a reused builder writes the same bytes");
}

#[test]
fn to_bytes_appends_to_out() {
    // The caller passes `out` empty, but an encoder must not clear or overwrite it anyway.
    let company = company::sample(8);
    let mut out = Vec::with_capacity(16);
    FORMAT.to_bytes(&company, &mut out).unwrap();
    assert_eq!(out, encode(&company));
}

#[test]
fn writes_the_file_identifier() {
    let bytes = encode(&company::sample(0));
    assert_eq!(&bytes[4..8], b"TKVC");
    assert!(bytes.len().is_multiple_of(4));
}

#[test]
fn check_works_at_any_address() {
    // ALIGN is 1: the stored bytes may sit at any address.
    let company = company::sample(9);
    let bytes = encode(&company);
    for shift in 0..8 {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(&bytes);
        assert_eq!(decode(&shifted[shift..]), company, "shift {shift}");
    }
}

#[test]
fn check_rejects_every_truncation() {
    let mut accepted = 0;
    for i in 0..50 {
        let company = company::sample(i);
        let bytes = encode(&company);
        for len in 0..bytes.len() {
            let truncated = &bytes[..len];
            if check(truncated).is_ok() {
                // The builder writes back to front, so the buffer ends with the first
                // string's terminator and alignment padding: cutting only that padding leaves
                // a complete buffer of the same value. Anything more must be refused.
                assert!(
                    bytes[len..].iter().all(|&b| b == 0) && bytes.len() - len < 4,
                    "sample {i} truncated to {len} of {} bytes was accepted",
                    bytes.len()
                );
                assert_eq!(decode(truncated), company);
                accepted += 1;
            }
        }
    }
    assert!(accepted < 50 * 3);
}

#[test]
fn check_rejects_empty_and_tiny() {
    for len in 0..16 {
        assert!(check(&vec![0u8; len]).is_err(), "{len} zero bytes");
        assert!(check(&vec![0xFFu8; len]).is_err(), "{len} 0xFF bytes");
    }
}

#[test]
fn check_rejects_random_garbage() {
    let mut rng = Rng(0xF1A7_B0FF);
    for _ in 0..20_000 {
        let len = rng.below(256) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Must not panic. Random bytes with the right identifier at 4..8 almost never verify;
        // without it they never may.
        let _ = check(&garbage);
        if garbage.get(4..8) != Some(b"TKVC") {
            assert!(check(&garbage).is_err());
        }
    }
}

#[test]
fn check_rejects_garbage_behind_the_identifier() {
    // Random bytes that do carry the right identifier get past the cheap test and exercise
    // the verifier itself.
    let mut rng = Rng(7);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let len = 8 + rng.below(200) as usize;
        let mut garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        garbage[4..8].copy_from_slice(b"TKVC");
        // Root offset in range half of the time, so the verifier gets further.
        if rng.below(2) == 0 {
            let root = (rng.below(len as u64 / 4)) as u32 * 4;
            garbage[..4].copy_from_slice(&root.to_le_bytes());
        }
        if let Ok(()) = check(&garbage) {
            accepted += 1;
            // Whatever it accepted must then be safe to read in full.
            // SAFETY: `check` just accepted these exact bytes.
            let view = unsafe { <FlatbuffersFormat as ValueFormat<Company>>::view(&(), &garbage) };
            let _ = Company::from_table(&view.root());
        }
    }
    // Not a requirement, just a sanity check that the generator is not degenerate.
    assert!(accepted < 20_000);
}

#[test]
fn check_rejects_corrupted_buffers() {
    // Flipping bytes of a valid buffer: check may accept (a changed scalar is still valid),
    // but never panics, and whatever it accepts reads without panicking.
    let mut rng = Rng(99);
    for i in 0..50 {
        let bytes = encode(&company::sample(i));
        for _ in 0..400 {
            let mut corrupt = bytes.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(corrupt.len() as u64) as usize;
                corrupt[at] = rng.next() as u8;
            }
            if check(&corrupt).is_ok() {
                // SAFETY: `check` just accepted these exact bytes.
                let view = unsafe { <FlatbuffersFormat as ValueFormat<Company>>::view(&(), &corrupt) };
                let _ = Company::from_table(&view.root());
            }
        }
    }
}

#[test]
fn check_rejects_invalid_utf8_name() {
    let mut company = company::sample(0);
    company.name = "NAMEMARK".to_owned();
    let mut bytes = encode(&company);
    let at = bytes.windows(8).position(|w| w == b"NAMEMARK").unwrap();
    bytes[at] = 0xFF;
    let err = check(&bytes).unwrap_err();
    assert!(err.contains("Utf8") || err.contains("utf8"), "{err}");
}

/// A record of another schema: a table whose first field is also a string, so that without
/// the file identifier the Company verifier could take it for a Company.
mod other_schema {
    pub struct Other<'a> {
        pub _tab: flatbuffers::Table<'a>,
    }

    impl<'a> flatbuffers::Follow<'a> for Other<'a> {
        type Inner = Other<'a>;
        unsafe fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
            Self { _tab: unsafe { flatbuffers::Table::new(buf, loc) } }
        }
    }

    impl<'a> Other<'a> {
        pub fn title(&self) -> &'a str {
            // SAFETY: `Other` values come from `flatbuffers::root`, whose verifier checked
            // that slot 4 holds a string (required, so present).
            unsafe { self._tab.get::<flatbuffers::ForwardsUOffset<&str>>(4, None).unwrap() }
        }
    }

    impl flatbuffers::Verifiable for Other<'_> {
        fn run_verifier(
            v: &mut flatbuffers::Verifier,
            pos: usize,
        ) -> Result<(), flatbuffers::InvalidFlatbuffer> {
            v.visit_table(pos)?.visit_field::<flatbuffers::ForwardsUOffset<&str>>("title", 4, true)?.finish();
            Ok(())
        }
    }

    /// Builds an `Other` with `title`, finished with `identifier`.
    pub fn build(title: &str, identifier: Option<&str>) -> Vec<u8> {
        let mut builder = flatbuffers::FlatBufferBuilder::new();
        let title = builder.create_string(title);
        let start = builder.start_table();
        builder.push_slot_always(4, title);
        let table = builder.end_table(start);
        builder.finish(table, identifier);
        builder.finished_data().to_vec()
    }
}

#[test]
fn check_rejects_another_schema() {
    for identifier in [None, Some("OTHR")] {
        let bytes = other_schema::build("Not a company", identifier);
        // A valid buffer of its own schema...
        let other = flatbuffers::root::<other_schema::Other>(&bytes).unwrap();
        assert_eq!(other.title(), "Not a company");
        // ...that Company refuses.
        let err = check(&bytes).unwrap_err();
        assert!(err.contains("identifier"), "{err}");
    }
    // Same identifier, different layout: only the verifier can tell, and here it cannot
    // (a table with a required string first is a valid Company): the identifier is what
    // separates schemas. A layout that breaks Company's rules is refused.
    let mut builder = flatbuffers::FlatBufferBuilder::new();
    let start = builder.start_table();
    builder.push_slot_always::<u64>(6, 7); // cik, but no required name
    let table = builder.end_table(start);
    builder.finish(table, Some("TKVC"));
    let err = check(builder.finished_data()).unwrap_err();
    assert!(err.contains("name"), "{err}");
}

#[test]
fn check_rejects_the_rkyv_encoding_of_the_same_value() {
    let company = company::sample(12);
    let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&company).unwrap();
    assert!(check(&archived).is_err());
}

#[test]
fn records_without_identifier_skip_the_identifier_check() {
    /// `Company` again, written without a file identifier.
    struct Bare(Company);

    impl FlatbuffersRecord for Bare {
        type Table<'a> = CompanyTable<'a>;
        const ROOT_NAME: &'static str = "typed_kv_example.Company";

        fn write<'b>(
            &self,
            builder: &mut flatbuffers::FlatBufferBuilder<'b>,
        ) -> flatbuffers::WIPOffset<CompanyTable<'b>> {
            self.0.write(builder)
        }
    }

    let company = company::sample(13);
    let mut bytes = Vec::new();
    FORMAT.to_bytes(&Bare(company.clone()), &mut bytes).unwrap();
    assert_ne!(&bytes[4..8], b"TKVC");
    <FlatbuffersFormat as ValueFormat<Bare>>::check(&FORMAT, &bytes).unwrap();
    // SAFETY: `check` just accepted these exact bytes.
    let view = unsafe { <FlatbuffersFormat as ValueFormat<Bare>>::view(&(), &bytes) };
    assert_eq!(Company::from_table(&view.root()), company);
    // A Company table (identifier required) refuses them.
    assert!(check(&bytes).is_err());
}

#[test]
fn bad_identifier_length_is_an_error_not_a_panic() {
    struct Bad(Company);

    impl FlatbuffersRecord for Bad {
        type Table<'a> = CompanyTable<'a>;
        const ROOT_NAME: &'static str = "typed_kv_example.Company";
        const FILE_IDENTIFIER: Option<&'static str> = Some("TOOLONG");

        fn write<'b>(
            &self,
            builder: &mut flatbuffers::FlatBufferBuilder<'b>,
        ) -> flatbuffers::WIPOffset<CompanyTable<'b>> {
            self.0.write(builder)
        }
    }

    let mut bytes = Vec::new();
    let err = FORMAT.to_bytes(&Bad(company::sample(0)), &mut bytes).unwrap_err();
    assert!(err.reason.contains("TOOLONG"), "{err}");
    assert!(<FlatbuffersFormat as ValueFormat<Bad>>::check(&FORMAT, &encode(&company::sample(0))).is_err());
}

#[test]
fn verifier_options_are_the_records() {
    /// `Company` with a verifier that allows almost nothing.
    struct Strict(Company);

    impl FlatbuffersRecord for Strict {
        type Table<'a> = CompanyTable<'a>;
        const ROOT_NAME: &'static str = "typed_kv_example.Company";
        const FILE_IDENTIFIER: Option<&'static str> = Some(company::COMPANY_IDENTIFIER);

        fn write<'b>(
            &self,
            builder: &mut flatbuffers::FlatBufferBuilder<'b>,
        ) -> flatbuffers::WIPOffset<CompanyTable<'b>> {
            self.0.write(builder)
        }

        fn verifier_options() -> flatbuffers::VerifierOptions {
            flatbuffers::VerifierOptions { max_apparent_size: 64, ..Default::default() }
        }
    }

    let mut long = company::sample(0);
    long.name = "y".repeat(1_000);
    let bytes = encode(&long);
    check(&bytes).unwrap();
    assert!(<FlatbuffersFormat as ValueFormat<Strict>>::check(&FORMAT, &bytes).is_err());
}

#[test]
fn a_panicking_write_does_not_poison_the_next_one() {
    struct Panics;

    impl FlatbuffersRecord for Panics {
        type Table<'a> = CompanyTable<'a>;
        const ROOT_NAME: &'static str = "typed_kv_example.Company";

        fn write<'b>(
            &self,
            builder: &mut flatbuffers::FlatBufferBuilder<'b>,
        ) -> flatbuffers::WIPOffset<CompanyTable<'b>> {
            // Leaves the builder mid-table, then panics.
            let _ = builder.create_string("half");
            let _ = builder.start_table();
            builder.push_slot::<u64>(6, 1, 0);
            panic!("write failed");
        }
    }

    let company = company::sample(14);
    let before = encode(&company);
    let result = std::panic::catch_unwind(|| {
        let mut out = Vec::new();
        FORMAT.to_bytes(&Panics, &mut out)
    });
    assert!(result.is_err());
    assert_eq!(encode(&company), before);
    assert_eq!(decode(&before), company);
}

#[test]
fn view_and_checked_are_cheap_types() {
    // The view is a fat pointer to the bytes; Checked is nothing.
    assert_eq!(std::mem::size_of::<&FlatbuffersView<Company>>(), std::mem::size_of::<&[u8]>());
    assert_eq!(std::mem::size_of::<<FlatbuffersFormat as ValueFormat<Company>>::Checked>(), 0);
    fn send_sync<T: Send + Sync + ?Sized>() {}
    send_sync::<FlatbuffersView<Company>>();
    send_sync::<FlatbuffersFormat>();
}
