//! A bound on AMF0 messages before `rml_amf0` decodes them: their size, and how deeply their
//! values nest.
//!
//! Contract: [`check`] reads a message exactly as `rml_amf0` 0.3 would (same markers, same
//! reads, same places it stops or fails) but with a stack of its own instead of recursion,
//! and refuses one that would take the decoder more than [`MAX_DEPTH`] levels deep. The
//! decoder recurses once per level, so a stranger's 64 KiB of nested arrays would otherwise
//! overflow the thread's stack: an abort of the whole streamer, which no `catch_unwind`
//! stops. Where the decoder would fail, this says yes and lets it fail.

/// The largest AMF0 message (command or data) taken: `onMetaData` and commands are a few
/// hundred bytes.
pub(super) const MAX_AMF_BYTES: usize = 64 << 10;
/// Objects and arrays nested at most this deep (`onMetaData` nests two).
pub(super) const MAX_DEPTH: usize = 16;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0a;

/// What the value being read is inside of.
enum Inside {
    Object,
    /// A strict array with this many values still to come.
    Array(u32),
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let bytes = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Up to `n` bytes: the decoder's `read` into a buffer takes what there is.
    fn skip_some(&mut self, n: usize) {
        self.at = self.at.saturating_add(n).min(self.data.len());
    }
}

/// Whether `rml_amf0` may decode `data`: `Err` says why not.
pub(super) fn check(data: &[u8]) -> Result<(), String> {
    if data.len() > MAX_AMF_BYTES {
        return Err(format!(
            "an AMF message of {} bytes (at most {MAX_AMF_BYTES})",
            data.len()
        ));
    }
    let mut r = Reader { data, at: 0 };
    let mut stack: Vec<Inside> = Vec::new();
    loop {
        // Where the next value comes from.
        match stack.last_mut() {
            None => {}
            Some(Inside::Object) => {
                let Some(label) = r.u16() else { return Ok(()) };
                if label == 0 {
                    if r.u8() != Some(OBJECT_END) {
                        return Ok(());
                    }
                    stack.pop();
                    continue;
                }
                r.skip_some(label);
            }
            Some(Inside::Array(0)) => {
                stack.pop();
                continue;
            }
            Some(Inside::Array(left)) => *left -= 1,
        }
        // The value: nothing (the end of the input, or an object-end marker) ends the
        // message at the top, ends an array early, and is an error for an object property.
        let marker = match r.u8() {
            Some(OBJECT_END) | None => match stack.last() {
                None | Some(Inside::Object) => return Ok(()),
                Some(Inside::Array(_)) => {
                    stack.pop();
                    continue;
                }
            },
            Some(marker) => marker,
        };
        match marker {
            NUMBER if r.take(8).is_none() => return Ok(()),
            BOOLEAN if r.take(1).is_none() => return Ok(()),
            NUMBER | BOOLEAN | NULL | UNDEFINED => {}
            STRING => match r.u16() {
                Some(len) => r.skip_some(len),
                None => return Ok(()),
            },
            OBJECT => stack.push(Inside::Object),
            ECMA_ARRAY => match r.u32() {
                Some(_) => stack.push(Inside::Object),
                None => return Ok(()),
            },
            STRICT_ARRAY => match r.u32() {
                Some(count) => stack.push(Inside::Array(count)),
                None => return Ok(()),
            },
            // The decoder knows no other marker: it fails here.
            _ => return Ok(()),
        }
        if stack.len() > MAX_DEPTH {
            return Err(format!("AMF values nested deeper than {MAX_DEPTH} levels"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::rml_amf0::{self, Amf0Value};
    use std::collections::HashMap;

    fn nested(levels: usize) -> Amf0Value {
        let mut value = Amf0Value::Number(1.0);
        for i in 0..levels {
            value = if i % 2 == 0 {
                Amf0Value::StrictArray(vec![Amf0Value::Null, value])
            } else {
                Amf0Value::Object(HashMap::from([("k".to_owned(), value)]))
            };
        }
        value
    }

    #[test]
    fn what_publishers_send_passes() {
        let metadata = Amf0Value::Object(HashMap::from([
            ("width".to_owned(), Amf0Value::Number(320.0)),
            ("videocodecid".to_owned(), Amf0Value::Number(7.0)),
            ("encoder".to_owned(), Amf0Value::Utf8String("Lavf59".into())),
            ("stereo".to_owned(), Amf0Value::Boolean(true)),
        ]));
        let values = [
            Amf0Value::Utf8String("@setDataFrame".into()),
            Amf0Value::Utf8String("onMetaData".into()),
            metadata,
            nested(MAX_DEPTH),
        ];
        let bytes = rml_amf0::serialize(&values.to_vec()).unwrap();
        check(&bytes).unwrap();
        // The decoder takes it too.
        let decoded = rml_amf0::deserialize(&mut std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(decoded, values);
    }

    #[test]
    fn deep_nesting_and_big_messages_are_refused_before_the_decoder_sees_them() {
        let bytes = rml_amf0::serialize(&vec![nested(MAX_DEPTH + 1)]).unwrap();
        let err = check(&bytes).unwrap_err();
        assert!(err.contains("deeper than 16"), "{err}");
        // A stranger's 64 KiB of nested arrays (5 bytes a level), which would overflow the
        // decoder's stack.
        let mut deep = Vec::new();
        while deep.len() + 5 <= MAX_AMF_BYTES {
            deep.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1]);
        }
        assert!(check(&deep).unwrap_err().contains("nested deeper"));
        // Nesting hidden in an ECMA array's properties.
        let mut ecma = Vec::new();
        for _ in 0..40 {
            ecma.extend_from_slice(&[ECMA_ARRAY, 0, 0, 0, 1, 0, 1, b'k']);
        }
        assert!(check(&ecma).unwrap_err().contains("nested deeper"));
        let big = vec![NULL; MAX_AMF_BYTES + 1];
        assert!(check(&big).unwrap_err().contains("65537 bytes"));
    }

    #[test]
    fn containers_closed_in_time_keep_the_depth_low() {
        // 40 objects one after another, each closed: depth 1 all along.
        let mut flat = Vec::new();
        for _ in 0..40 {
            flat.extend_from_slice(&[OBJECT, 0, 1, b'a', NULL, 0, 0, OBJECT_END]);
        }
        check(&flat).unwrap();
        // Strict arrays that end when their count is used up.
        let mut arrays = Vec::new();
        for _ in 0..40 {
            arrays.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 2, NULL, BOOLEAN, 1]);
        }
        check(&arrays).unwrap();
        // Bytes that look like markers inside a string or a number are not markers.
        let mut string = vec![STRING, 0, 40];
        string.extend_from_slice(&[STRICT_ARRAY; 40]);
        check(&string).unwrap();
    }
}
