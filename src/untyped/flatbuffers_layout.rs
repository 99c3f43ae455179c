//! What can be checked of a finished FlatBuffer without its schema: the root table's frame.
//!
//! A finished buffer starts with the root table's offset (`u32`, little-endian); the table
//! starts with a signed offset back to its vtable; the vtable holds its own size, the table's
//! inline size and one `u16` offset per field. These are checked as the FlatBuffers verifier
//! checks them (bounds and alignment relative to the buffer's start). What the fields hold
//! (strings, vectors, nested tables, unions) is described only by the schema, so only the
//! generated code's verifier, which a typed guard runs, can check them.

/// Largest buffer FlatBuffers allows (offsets are 32-bit signed in places).
const MAX_BUFFER: usize = (1 << 31) - 1;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Checks the root table's frame; says what is wrong.
pub(crate) fn check_root_table(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_BUFFER {
        return Err(format!("{} bytes is over the FlatBuffers limit of 2 GiB", bytes.len()));
    }
    let root = u32_at(bytes, 0)
        .ok_or_else(|| format!("{} bytes is too short for a root offset", bytes.len()))?
        as usize;
    if !root.is_multiple_of(4) {
        return Err(format!("the root table offset {root} is not 4-byte aligned"));
    }
    let soffset = u32_at(bytes, root)
        .ok_or_else(|| format!("the root table offset {root} is outside the {}-byte buffer", bytes.len()))?
        as i32;
    let vtable = root as i64 - i64::from(soffset);
    let vtable = usize::try_from(vtable)
        .ok()
        .filter(|&v| v + 4 <= bytes.len())
        .ok_or_else(|| format!("the root table's vtable offset {vtable} is outside the buffer"))?;
    if !vtable.is_multiple_of(2) {
        return Err(format!("the root table's vtable at {vtable} is not 2-byte aligned"));
    }
    let vtable_len = u16_at(bytes, vtable).unwrap_or(0) as usize;
    let table_len = u16_at(bytes, vtable + 2).unwrap_or(0) as usize;
    if vtable_len < 4 || !vtable_len.is_multiple_of(2) || vtable + vtable_len > bytes.len() {
        return Err(format!("the root table's vtable at {vtable} claims an invalid size {vtable_len}"));
    }
    if table_len < 4 || root + table_len > bytes.len() {
        return Err(format!("the root table at {root} claims {table_len} bytes, past the buffer's end"));
    }
    for field in (vtable + 4..vtable + vtable_len).step_by(2) {
        let offset = u16_at(bytes, field).unwrap_or(0) as usize;
        if offset != 0 && (offset < 4 || offset >= table_len) {
            let index = (field - vtable - 4) / 2;
            return Err(format!(
                "field {index} of the root table lies at {offset}, outside the table's {table_len} bytes"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer with one root table of two `u32` fields, built by hand like flatc's builder:
    /// root offset, vtable (size 8, table size 12, fields at 4 and 8), table.
    fn buffer() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&12u32.to_le_bytes()); // root table at 12
        b.extend_from_slice(&8u16.to_le_bytes()); // vtable at 4: size
        b.extend_from_slice(&12u16.to_le_bytes()); // table size
        b.extend_from_slice(&4u16.to_le_bytes()); // field 0
        b.extend_from_slice(&8u16.to_le_bytes()); // field 1
        b.extend_from_slice(&(12i32 - 4).to_le_bytes()); // table at 12: vtable is 8 back
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b
    }

    #[test]
    fn a_well_framed_root_passes() {
        assert_eq!(check_root_table(&buffer()), Ok(()));
    }

    #[test]
    fn every_truncation_and_bad_offset_is_reported() {
        let good = buffer();
        for len in 0..good.len() {
            assert!(check_root_table(&good[..len]).is_err(), "cut at {len} passed");
        }
        let mut bad = good.clone();
        bad[0] = 13;
        assert!(check_root_table(&bad).unwrap_err().contains("aligned"));
        let mut bad = good.clone();
        bad[12] = 200;
        assert!(check_root_table(&bad).unwrap_err().contains("vtable"));
        let mut bad = good;
        bad[10] = 40;
        assert!(check_root_table(&bad).unwrap_err().contains("field 1"));
    }
}
