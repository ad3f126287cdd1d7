//! What made an output: the program and its version, the command, the model's content hash,
//! the options that change the result, and the input it was made from. Stored in a table's
//! Parquet key-value metadata (`stn.lineage`, JSON) and beside image outputs, so that a re-run
//! keeps an existing output only when the same model and options made it from the same input,
//! and says why it will not otherwise.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

/// The model of a lineage when its content is not known (a model built in memory).
pub const UNKNOWN_MODEL: &str = "unknown";

/// The key of the lineage in a table's metadata.
pub const LINEAGE_KEY: &str = "stn.lineage";

/// What made an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// `rectify`, `augment`, ...
    pub command: String,
    /// The program's version (`stn` and its version).
    pub version: String,
    /// The model's content hash (`sha256:...`), where a model made it.
    pub model: Option<String>,
    /// The options that change what is written, by name.
    pub options: BTreeMap<String, String>,
    /// The input: its file name, rows and size in bytes.
    pub input: Option<InputId>,
}

/// An input file, as a lineage names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputId {
    /// The file's name (not its folder: a table may be moved with its outputs).
    pub name: String,
    /// Rows.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

impl InputId {
    /// The identity of `path` with `rows` rows.
    pub fn of(path: &Path, rows: u64) -> InputId {
        InputId {
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            rows,
            bytes: crate::remote::file_size(path).unwrap_or(0),
        }
    }
}

impl Lineage {
    /// A lineage of this program for `command`, made by `model` (its content hash, or
    /// [`UNKNOWN_MODEL`]; None where no model is involved).
    pub fn new(command: &str, model: Option<&str>, options: BTreeMap<String, String>) -> Lineage {
        Lineage {
            command: command.into(),
            version: format!("stn {}", env!("CARGO_PKG_VERSION")),
            model: model.map(str::to_string),
            options,
            input: None,
        }
    }

    /// The same lineage for one input.
    pub fn with_input(mut self, input: InputId) -> Lineage {
        self.input = Some(input);
        self
    }

    /// As JSON (the value of [`LINEAGE_KEY`]).
    pub fn to_json(&self) -> String {
        let input = self.input.as_ref().map(|i| json!({"name": i.name, "rows": i.rows, "bytes": i.bytes}));
        json!({
            "command": self.command,
            "version": self.version,
            "model": self.model,
            "options": self.options,
            "input": input,
        })
        .to_string()
    }

    /// Reads a lineage written by [`to_json`](Self::to_json).
    pub fn from_json(s: &str) -> Result<Lineage, String> {
        let v: Value = serde_json::from_str(s).map_err(|e| format!("unreadable lineage: {e}"))?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let options = v
            .get("options")
            .and_then(Value::as_object)
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        let input = v.get("input").filter(|i| !i.is_null()).map(|i| InputId {
            name: i.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
            rows: i.get("rows").and_then(Value::as_u64).unwrap_or(0),
            bytes: i.get("bytes").and_then(Value::as_u64).unwrap_or(0),
        });
        Ok(Lineage {
            command: text("command").ok_or("the lineage names no command")?,
            version: text("version").unwrap_or_default(),
            model: text("model"),
            options,
            input,
        })
    }

    /// The lineage in a table's metadata: None when there is none (not made by stn, or by a
    /// version that did not record it).
    pub fn from_metadata(
        meta: &std::collections::HashMap<String, String>,
    ) -> Option<Result<Lineage, String>> {
        meta.get(LINEAGE_KEY).map(|s| Lineage::from_json(s))
    }

    /// How `self` (an existing output's) differs from `now` (this run's), in words; empty when
    /// the output is what this run would make. The version is not compared: the same model and
    /// options give the same output.
    pub fn differences(&self, now: &Lineage) -> Vec<String> {
        let mut d = Vec::new();
        if self.command != now.command {
            d.push(format!("made by `{}`, not `{}`", self.command, now.command));
        }
        // A model of unknown content never matches, not even one of the same name.
        let unknown = |m: &Option<String>| m.as_deref().is_some_and(|m| m.starts_with(UNKNOWN_MODEL));
        if self.model != now.model || unknown(&now.model) {
            let show = |m: &Option<String>| m.as_deref().map_or("(unknown)".to_string(), short);
            d.push(format!("another model ({} there, {} now)", show(&self.model), show(&now.model)));
        }
        let keys: std::collections::BTreeSet<&String> =
            self.options.keys().chain(now.options.keys()).collect();
        for k in keys {
            let (a, b) = (self.options.get(k), now.options.get(k));
            if a != b {
                let show = |v: Option<&String>| v.map_or("(unset)".to_string(), |v| format!("`{v}`"));
                d.push(format!("option {k}: {} there, {} now", show(a), show(b)));
            }
        }
        if let (Some(a), Some(b)) = (&self.input, &now.input) {
            if a != b {
                d.push(format!(
                    "another input ({}: {} rows, {} bytes there; {}: {} rows, {} bytes now)",
                    a.name, a.rows, a.bytes, b.name, b.rows, b.bytes
                ));
            }
        }
        d
    }
}

/// The options every table reader's lineage records: the image column and the rules rows
/// are read by (`max_pixels`, where `path` rows are read from, `allow_outside_paths`,
/// `max_file_bytes`), added to `o`.
pub fn add_read_options(
    o: &mut BTreeMap<String, String>,
    column: Option<&str>,
    decode: &crate::codec::DecodeOptions,
) {
    o.insert("column".into(), column.unwrap_or("(detected)").into());
    o.insert("max_pixels".into(), decode.max_pixels.to_string());
    o.insert(
        "base_dir".into(),
        decode.base_dir.as_ref().map_or_else(|| "(the table's folder)".into(), |b| b.display().to_string()),
    );
    o.insert("allow_outside_paths".into(), decode.allow_outside_paths.to_string());
    o.insert("max_file_bytes".into(), decode.max_file_bytes.to_string());
}

/// Whether the existing output `meta` (a table's schema metadata) was made as `want` says:
/// `Ok(())`, or why not, in words (no lineage, an unreadable one, or how it differs).
pub fn check_made_as(meta: &std::collections::HashMap<String, String>, want: &Lineage) -> Result<(), String> {
    let there = match Lineage::from_metadata(meta) {
        None => return Err("records no lineage (made by another tool, or an older stn)".into()),
        Some(Err(e)) => return Err(e),
        Some(Ok(l)) => l,
    };
    let d = there.differences(want);
    if d.is_empty() {
        Ok(())
    } else {
        Err(format!("was made differently: {}", d.join("; ")))
    }
}

fn short(model: &str) -> String {
    match model.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => model.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_lineage_reads_back_and_names_what_differs() {
        let input = InputId { name: "a.parquet".into(), rows: 10, bytes: 999 };
        let a = Lineage::new("rectify", Some("sha256:0123456789abcdef0123"), opts(&[("format", "png")]))
            .with_input(input.clone());
        let back = Lineage::from_json(&a.to_json()).unwrap();
        assert_eq!(back, a);
        assert!(a.differences(&back).is_empty());
        let b = Lineage::new("rectify", Some("sha256:fedcba9876543210fedc"), opts(&[("format", "jpeg")]))
            .with_input(InputId { rows: 11, ..input });
        let d = a.differences(&b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("another model (sha256:0123456789ab there, sha256:fedcba987654 now)"), "{d:?}");
        assert!(d[1].contains("option format: `png` there, `jpeg` now"), "{d:?}");
        assert!(d[2].contains("10 rows") && d[2].contains("11 rows"), "{d:?}");
        // A model of unknown content never matches, not even itself; no model matches no model.
        let u = Lineage::new("rectify", Some(UNKNOWN_MODEL), BTreeMap::new());
        assert!(!u.differences(&u).is_empty());
        let n = Lineage::new("augment", None, BTreeMap::new());
        assert!(n.differences(&n).is_empty());
    }
}
