//! JSON the way Ganeti's Python side writes it: one line, `", "` between
//! items and `": "` after keys (RAPI answers and the job process's job
//! files). luxid's job files are compact (plain `serde_json`).

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

/// Python `json.dumps` default separators.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PyFormatter;

impl Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// Serialises `v` with Python's separators, appending to `out`.
pub fn write_py<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, PyFormatter);
    v.serialize(&mut ser)
}

/// Serialises `v` with Python's separators.
pub fn to_py_vec<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Serialising our own in-memory values cannot fail (string keys only).
    let _ = write_py(&mut out, v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_separators() {
        let v = json!({"a": [1, 2], "b": {"c": null}});
        assert_eq!(
            String::from_utf8(to_py_vec(&v)).unwrap(),
            r#"{"a": [1, 2], "b": {"c": null}}"#
        );
    }
}
