//! NumericRange on values (Part 4 §7.27): sub-arrays, substrings of Strings and ByteStrings, and the last range
//! of an array of Strings/ByteStrings selecting within each element.
//!
//! Our own implementation rather than `Variant::range_of`: that one slices Strings by byte and panics inside a
//! multi-byte character, and a client controls both the string and the range. Strings are indexed by character.

use opcua_types::{Array, ByteString, NumericRange, StatusCode, UAString, Variant, VariantScalarTypeId};

/// (first, last) per dimension, inclusive.
fn dimensions(range: &NumericRange) -> Result<Vec<(usize, usize)>, StatusCode> {
    fn one(range: &NumericRange) -> Result<(usize, usize), StatusCode> {
        let (first, last) = match *range {
            NumericRange::Index(i) => (i, i),
            NumericRange::Range(first, last) if first < last => (first, last),
            _ => return Err(StatusCode::BadIndexRangeInvalid),
        };
        let to_usize = |n: u32| usize::try_from(n).map_err(|_| StatusCode::BadIndexRangeInvalid);
        Ok((to_usize(first)?, to_usize(last)?))
    }
    match range {
        NumericRange::MultipleRanges(ranges) if !ranges.is_empty() => ranges.iter().map(one).collect(),
        NumericRange::MultipleRanges(_) | NumericRange::None => Err(StatusCode::BadIndexRangeInvalid),
        single => Ok(vec![one(single)?]),
    }
}

/// The elements `first..=last` of a sequence of `len`, clipped at its end; NoData when it starts past the end.
fn clip(len: usize, (first, last): (usize, usize)) -> Result<std::ops::RangeInclusive<usize>, StatusCode> {
    if first >= len {
        return Err(StatusCode::BadIndexRangeNoData);
    }
    Ok(first..=last.min(len - 1))
}

fn substring(value: &Variant, bounds: (usize, usize)) -> Result<Variant, StatusCode> {
    match value {
        Variant::String(s) => {
            let chars: Vec<char> = s.as_ref().chars().collect();
            let range = clip(chars.len(), bounds)?;
            Ok(Variant::String(UAString::from(chars.get(range).unwrap_or_default().iter().collect::<String>())))
        }
        Variant::ByteString(b) => {
            let bytes = b.value.as_deref().unwrap_or_default();
            let range = clip(bytes.len(), bounds)?;
            Ok(Variant::ByteString(ByteString::from(bytes.get(range).unwrap_or_default().to_vec())))
        }
        _ => Err(StatusCode::BadIndexRangeInvalid),
    }
}

/// The flat indexes of the block `ranges` selects in an array of `shape` (row-major), and the block's shape.
fn block(shape: &[usize], ranges: &[(usize, usize)]) -> Result<(Vec<usize>, Vec<usize>), StatusCode> {
    let clipped: Vec<_> = shape.iter().zip(ranges).map(|(len, r)| clip(*len, *r)).collect::<Result<_, _>>()?;
    let mut indexes = vec![0usize];
    for (dim, range) in clipped.iter().enumerate() {
        let stride: usize = shape.get(dim + 1..).unwrap_or_default().iter().product();
        indexes = indexes.iter().flat_map(|base| range.clone().map(move |i| base + i * stride)).collect();
    }
    Ok((indexes, clipped.iter().map(|r| r.clone().count()).collect()))
}

fn array_shape(array: &Array) -> Vec<usize> {
    match &array.dimensions {
        Some(d) if d.len() > 1 => d.iter().map(|n| usize::try_from(*n).unwrap_or(0)).collect(),
        _ => vec![array.values.len()],
    }
}

/// The part of `value` that `range` selects.
pub(crate) fn read(value: &Variant, range: &NumericRange) -> Result<Variant, StatusCode> {
    if range.is_none() {
        return Ok(value.clone());
    }
    let ranges = dimensions(range)?;
    match value {
        Variant::String(_) | Variant::ByteString(_) => match ranges.as_slice() {
            [one] => substring(value, *one),
            _ => Err(StatusCode::BadIndexRangeInvalid),
        },
        Variant::Array(array) => {
            let shape = array_shape(array);
            // Dimensions come from clients (a written multi-dimensional array): multiply without overflowing.
            let elements = shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
            if elements != Some(array.values.len()) {
                return Err(StatusCode::BadIndexRangeNoData);
            }
            let inner = match ranges.len().checked_sub(shape.len()) {
                Some(0) => None,
                Some(1)
                    if matches!(array.value_type, VariantScalarTypeId::String | VariantScalarTypeId::ByteString) =>
                {
                    ranges.last().copied()
                }
                _ => return Err(StatusCode::BadIndexRangeInvalid),
            };
            let (indexes, block_shape) = block(&shape, ranges.get(..shape.len()).unwrap_or_default())?;
            let mut values = Vec::with_capacity(indexes.len());
            for i in indexes {
                let element = array.values.get(i).ok_or(StatusCode::BadIndexRangeNoData)?;
                values.push(match inner {
                    // An element too short for the substring range contributes an empty value rather than failing
                    // the whole read.
                    Some(bounds) => substring(element, bounds).unwrap_or_else(|_| match element {
                        Variant::String(_) => Variant::String(UAString::null()),
                        _ => Variant::ByteString(ByteString::null()),
                    }),
                    None => element.clone(),
                });
            }
            let result = if block_shape.len() > 1 {
                let dims: Vec<u32> = block_shape.iter().map(|n| u32::try_from(*n).unwrap_or(u32::MAX)).collect();
                Array::new_multi(array.value_type, values, dims)
            } else {
                Array::new(array.value_type, values)
            };
            result.map(Variant::from).map_err(|_| StatusCode::BadIndexRangeNoData)
        }
        Variant::Empty => Err(StatusCode::BadIndexRangeNoData),
        _ => Err(StatusCode::BadIndexRangeInvalid),
    }
}

/// `current` with the part `range` selects replaced by `new`, which must have exactly that part's size
/// (BadIndexRangeDataMismatch otherwise). One-dimensional arrays, Strings and ByteStrings only.
pub(crate) fn write(current: &Variant, range: &NumericRange, new: &Variant) -> Result<Variant, StatusCode> {
    let ranges = dimensions(range)?;
    let [(first, last)] = ranges.as_slice() else { return Err(StatusCode::BadIndexRangeInvalid) };
    let (first, last) = (*first, *last);
    let wanted = last - first + 1;
    match (current, new) {
        (Variant::Array(array), Variant::Array(new_array)) if array_shape(array).len() == 1 => {
            if last >= array.values.len() {
                return Err(StatusCode::BadIndexRangeNoData);
            }
            if new_array.values.len() != wanted || new_array.value_type != array.value_type {
                return Err(StatusCode::BadIndexRangeDataMismatch);
            }
            let mut values = array.values.clone();
            for (slot, value) in values.iter_mut().skip(first).zip(new_array.values.iter()) {
                *slot = value.clone();
            }
            Array::new(array.value_type, values).map(Variant::from).map_err(|_| StatusCode::BadIndexRangeDataMismatch)
        }
        (Variant::String(s), Variant::String(n)) => {
            let mut chars: Vec<char> = s.as_ref().chars().collect();
            let replacement: Vec<char> = n.as_ref().chars().collect();
            if last >= chars.len() {
                return Err(StatusCode::BadIndexRangeNoData);
            }
            if replacement.len() != wanted {
                return Err(StatusCode::BadIndexRangeDataMismatch);
            }
            chars.splice(first..=last, replacement);
            Ok(Variant::String(chars.into_iter().collect::<String>().into()))
        }
        (Variant::ByteString(b), Variant::ByteString(n)) => {
            let mut bytes = b.value.clone().unwrap_or_default();
            let replacement = n.value.clone().unwrap_or_default();
            if last >= bytes.len() {
                return Err(StatusCode::BadIndexRangeNoData);
            }
            if replacement.len() != wanted {
                return Err(StatusCode::BadIndexRangeDataMismatch);
            }
            bytes.splice(first..=last, replacement);
            Ok(Variant::ByteString(bytes.into()))
        }
        (Variant::Array(_) | Variant::String(_) | Variant::ByteString(_), _) => {
            Err(StatusCode::BadIndexRangeDataMismatch)
        }
        (Variant::Empty, _) => Err(StatusCode::BadIndexRangeNoData),
        _ => Err(StatusCode::BadIndexRangeInvalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: &[i32]) -> Variant {
        Variant::from(v.to_vec())
    }

    #[test]
    fn reads_sub_arrays_and_substrings() {
        assert_eq!(read(&ints(&[1, 2, 3, 4]), &NumericRange::Range(1, 2)), Ok(ints(&[2, 3])));
        assert_eq!(read(&ints(&[1, 2, 3, 4]), &NumericRange::Index(3)), Ok(ints(&[4])));
        assert_eq!(read(&ints(&[1, 2, 3, 4]), &NumericRange::Range(2, 9)), Ok(ints(&[3, 4])), "clipped at the end");
        assert_eq!(read(&Variant::from("grüße"), &NumericRange::Range(2, 3)), Ok(Variant::from("üß")));
        assert_eq!(
            read(&Variant::from(ByteString::from(vec![1u8, 2, 3])), &NumericRange::Range(0, 1)),
            Ok(Variant::from(ByteString::from(vec![1u8, 2])))
        );
        let strings = Variant::from(vec![UAString::from("abc"), UAString::from("def")]);
        let range = NumericRange::MultipleRanges(vec![NumericRange::Index(1), NumericRange::Range(0, 1)]);
        assert_eq!(read(&strings, &range), Ok(Variant::from(vec![UAString::from("de")])));
    }

    #[test]
    fn reads_blocks_of_matrices() {
        let values: Vec<Variant> = (0..6).map(Variant::Int32).collect();
        let matrix = Variant::from(Array::new_multi(VariantScalarTypeId::Int32, values, vec![2u32, 3]).unwrap());
        let range = NumericRange::MultipleRanges(vec![NumericRange::Range(0, 1), NumericRange::Index(2)]);
        let Ok(Variant::Array(block)) = read(&matrix, &range) else { panic!("no block") };
        assert_eq!(block.values, vec![Variant::Int32(2), Variant::Int32(5)]);
        assert_eq!(block.dimensions, Some(vec![2, 1]));
    }

    #[test]
    fn out_of_bounds_is_no_data_and_misfits_are_invalid() {
        assert_eq!(read(&ints(&[1, 2]), &NumericRange::Index(2)), Err(StatusCode::BadIndexRangeNoData));
        assert_eq!(read(&Variant::from(""), &NumericRange::Index(0)), Err(StatusCode::BadIndexRangeNoData));
        assert_eq!(read(&Variant::Int32(5), &NumericRange::Index(0)), Err(StatusCode::BadIndexRangeInvalid));
        assert_eq!(read(&ints(&[1]), &NumericRange::Range(3, 1)), Err(StatusCode::BadIndexRangeInvalid));
        let two = NumericRange::MultipleRanges(vec![NumericRange::Index(0), NumericRange::Index(0)]);
        assert_eq!(read(&ints(&[1]), &two), Err(StatusCode::BadIndexRangeInvalid));
    }

    #[test]
    fn writes_replace_exactly_the_range() {
        assert_eq!(write(&ints(&[1, 2, 3]), &NumericRange::Range(1, 2), &ints(&[8, 9])), Ok(ints(&[1, 8, 9])));
        assert_eq!(
            write(&Variant::from("abc"), &NumericRange::Index(1), &Variant::from("X")),
            Ok(Variant::from("aXc"))
        );
        assert_eq!(
            write(&ints(&[1, 2, 3]), &NumericRange::Range(1, 2), &ints(&[8])),
            Err(StatusCode::BadIndexRangeDataMismatch)
        );
        assert_eq!(
            write(&ints(&[1, 2, 3]), &NumericRange::Index(3), &ints(&[8])),
            Err(StatusCode::BadIndexRangeNoData)
        );
        assert_eq!(
            write(&Variant::Int32(1), &NumericRange::Index(0), &Variant::Int32(2)),
            Err(StatusCode::BadIndexRangeInvalid)
        );
    }
}
