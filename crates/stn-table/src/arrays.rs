//! Reading values out of, and building, the Arrow arrays image columns are made of, for every
//! physical variant a tool may write (32- or 64-bit offsets, views, fixed sizes, any integer).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::*;
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, FieldRef};

/// The bytes of row `i` of a binary column (None: null, or not a binary column).
pub fn bytes_at(a: &dyn Array, i: usize) -> Option<&[u8]> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Binary => Some(a.as_binary::<i32>().value(i)),
        DataType::LargeBinary => Some(a.as_binary::<i64>().value(i)),
        DataType::BinaryView => Some(a.as_binary_view().value(i)),
        _ => None,
    }
}

/// The string of row `i` of a string column (None: null, or not a string column).
pub fn str_at(a: &dyn Array, i: usize) -> Option<&str> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => Some(a.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Some(a.as_string::<i64>().value(i)),
        DataType::Utf8View => Some(a.as_string_view().value(i)),
        _ => None,
    }
}

/// Row `i` of an integer column as i64 (None: null, not an integer column, or out of range).
pub fn int_at(a: &dyn Array, i: usize) -> Option<i64> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i) as i64,
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i) as i64,
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i) as i64,
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i) as i64,
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i) as i64,
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i) as i64,
        DataType::UInt64 => i64::try_from(a.as_primitive::<UInt64Type>().value(i)).ok()?,
        _ => return None,
    })
}

/// The element range of row `i` of a list column, and its values.
fn list_at(a: &dyn Array, i: usize) -> Option<(ArrayRef, usize, usize)> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let o = l.value_offsets();
            Some((l.values().clone(), o[i] as usize, o[i + 1] as usize))
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            let o = l.value_offsets();
            Some((l.values().clone(), o[i] as usize, o[i + 1] as usize))
        }
        DataType::FixedSizeList(_, _) => {
            let l = a.as_fixed_size_list();
            let start = l.value_offset(i) as usize;
            Some((l.values().clone(), start, start + l.value_length() as usize))
        }
        _ => None,
    }
}

/// Row `i` of a list-of-uint8 column (copied out; None: null or another type).
pub fn u8_list_at(a: &dyn Array, i: usize) -> Option<Vec<u8>> {
    let (values, start, end) = list_at(a, i)?;
    let v = values.as_primitive_opt::<UInt8Type>()?;
    v.values().get(start..end).map(<[u8]>::to_vec)
}

/// Row `i` of a list-of-integers column.
pub fn int_list_at(a: &dyn Array, i: usize) -> Option<Vec<i64>> {
    let (values, start, end) = list_at(a, i)?;
    (start..end).map(|j| int_at(values.as_ref(), j)).collect()
}

fn nulls(valid: &[bool]) -> Option<NullBuffer> {
    if valid.iter().all(|&v| v) {
        None
    } else {
        Some(NullBuffer::from(valid.to_vec()))
    }
}

/// A binary column of type `t` (binary, large_binary or binary_view).
pub fn binary_array(t: &DataType, vals: &[Option<&[u8]>]) -> Result<ArrayRef, String> {
    Ok(match t {
        DataType::Binary => Arc::new(BinaryArray::from_iter(vals.iter().copied())),
        DataType::LargeBinary => Arc::new(LargeBinaryArray::from_iter(vals.iter().copied())),
        DataType::BinaryView => Arc::new(BinaryViewArray::from_iter(vals.iter().copied())),
        other => return Err(format!("cannot write bytes as {other}")),
    })
}

/// A string column of type `t`.
pub fn string_array(t: &DataType, vals: &[Option<&str>]) -> Result<ArrayRef, String> {
    Ok(match t {
        DataType::Utf8 => Arc::new(StringArray::from_iter(vals.iter().copied())),
        DataType::LargeUtf8 => Arc::new(LargeStringArray::from_iter(vals.iter().copied())),
        DataType::Utf8View => Arc::new(StringViewArray::from_iter(vals.iter().copied())),
        other => return Err(format!("cannot write text as {other}")),
    })
}

/// An integer column of type `t`.
pub fn int_array(t: &DataType, vals: &[Option<i64>]) -> Result<ArrayRef, String> {
    macro_rules! prim {
        ($ty:ty, $native:ty) => {
            Arc::new(PrimitiveArray::<$ty>::from_iter(vals.iter().map(|v| v.map(|x| x as $native))))
        };
    }
    Ok(match t {
        DataType::Int8 => prim!(Int8Type, i8),
        DataType::Int16 => prim!(Int16Type, i16),
        DataType::Int32 => prim!(Int32Type, i32),
        DataType::Int64 => prim!(Int64Type, i64),
        DataType::UInt8 => prim!(UInt8Type, u8),
        DataType::UInt16 => prim!(UInt16Type, u16),
        DataType::UInt32 => prim!(UInt32Type, u32),
        DataType::UInt64 => prim!(UInt64Type, u64),
        other => return Err(format!("cannot write integers as {other}")),
    })
}

/// A list column of type `t` (list, large_list or fixed_size_list) whose rows are the given
/// child ranges of `values` (`lens[i]` elements each; None: a null row).
fn list_array(t: &DataType, values: ArrayRef, lens: &[Option<usize>]) -> Result<ArrayRef, String> {
    let valid: Vec<bool> = lens.iter().map(Option::is_some).collect();
    let sizes = lens.iter().map(|l| l.unwrap_or(0));
    Ok(match t {
        DataType::List(f) => {
            let f = retype(f, values.data_type());
            Arc::new(
                ListArray::try_new(f, OffsetBuffer::<i32>::from_lengths(sizes), values, nulls(&valid))
                    .map_err(|e| e.to_string())?,
            )
        }
        DataType::LargeList(f) => {
            let f = retype(f, values.data_type());
            Arc::new(
                LargeListArray::try_new(f, OffsetBuffer::<i64>::from_lengths(sizes), values, nulls(&valid))
                    .map_err(|e| e.to_string())?,
            )
        }
        other => return Err(format!("cannot write a list as {other}")),
    })
}

fn retype(f: &FieldRef, t: &DataType) -> FieldRef {
    if f.data_type() == t {
        f.clone()
    } else {
        Arc::new(f.as_ref().clone().with_data_type(t.clone()))
    }
}

/// The validity of the items of a fixed-size list whose missing rows are lists of nulls.
fn item_nulls(valid: &[bool], n: usize) -> Option<NullBuffer> {
    nulls(&valid.iter().flat_map(|&v| std::iter::repeat_n(v, n)).collect::<Vec<_>>())
}

/// A list-of-uint8 column of type `t`; for fixed_size_list every present row must have the
/// fixed length `n`, and a missing row is a list of `n` nulls (see [`f32_fixed_list`]).
pub fn u8_list_array(t: &DataType, vals: &[Option<&[u8]>]) -> Result<ArrayRef, String> {
    if let DataType::FixedSizeList(f, n) = t {
        let n = *n as usize;
        let mut flat = Vec::with_capacity(vals.len() * n);
        for v in vals {
            match v {
                Some(v) if v.len() == n => flat.extend_from_slice(v),
                Some(v) => return Err(format!("a row of {} values in a fixed list of {n}", v.len())),
                None => flat.resize(flat.len() + n, 0),
            }
        }
        let valid: Vec<bool> = vals.iter().map(Option::is_some).collect();
        let values: ArrayRef = Arc::new(UInt8Array::new(ScalarBuffer::from(flat), item_nulls(&valid, n)));
        return Ok(Arc::new(
            FixedSizeListArray::try_new(retype(f, &DataType::UInt8), n as i32, values, None)
                .map_err(|e| e.to_string())?,
        ));
    }
    let flat: Vec<u8> = vals.iter().flatten().flat_map(|v| v.iter().copied()).collect();
    let values: ArrayRef = Arc::new(UInt8Array::new(ScalarBuffer::from(flat), None));
    list_array(t, values, &vals.iter().map(|v| v.map(<[u8]>::len)).collect::<Vec<_>>())
}

/// A list-of-integers column of type `t` (the item type is `t`'s).
pub fn int_list_array(t: &DataType, vals: &[Option<Vec<i64>>]) -> Result<ArrayRef, String> {
    let item = match t {
        DataType::List(f) | DataType::LargeList(f) => f.data_type().clone(),
        other => return Err(format!("cannot write a shape as {other}")),
    };
    let flat: Vec<Option<i64>> = vals.iter().flatten().flat_map(|v| v.iter().map(|&x| Some(x))).collect();
    let values = int_array(&item, &flat)?;
    list_array(t, values, &vals.iter().map(|v| v.as_ref().map(Vec::len)).collect::<Vec<_>>())
}

/// `fixed_size_list<float32>[p]` rows; a missing row (None) is a list of `p` nulls, not a null
/// list: Arrow C++ (pyarrow and the tools built on it) cannot read a null fixed-size list back
/// from Parquet (apache/arrow#35692), so a null list would make the whole file unreadable there.
pub fn f32_fixed_list(item: FieldRef, p: usize, vals: &[Option<&[f32]>]) -> Result<ArrayRef, String> {
    let mut flat = Vec::with_capacity(vals.len() * p);
    for v in vals {
        match v {
            Some(v) => flat.extend_from_slice(v),
            None => flat.resize(flat.len() + p, 0.0),
        }
    }
    let valid: Vec<bool> = vals.iter().map(Option::is_some).collect();
    let values: ArrayRef = Arc::new(Float32Array::new(ScalarBuffer::from(flat), item_nulls(&valid, p)));
    Ok(Arc::new(FixedSizeListArray::try_new(item, p as i32, values, None).map_err(|e| e.to_string())?))
}

/// A struct column with the given fields and children; `valid[i]` false makes row i null.
pub fn struct_array(
    fields: arrow_schema::Fields,
    children: Vec<ArrayRef>,
    valid: &[bool],
) -> Result<ArrayRef, String> {
    Ok(Arc::new(StructArray::try_new(fields, children, nulls(valid)).map_err(|e| e.to_string())?))
}
