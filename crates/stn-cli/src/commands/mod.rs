//! The subcommands, one file each: an `Args` struct and an `exec`.

use std::path::Path;

use stn_cli::run::{self, RunConfig, RunResult};
use stn_data::Dataset;

pub mod args;
pub mod augment;
pub mod bench;
pub mod demo;
pub mod eval;
pub mod explain;
pub mod export;
pub mod import_torch;
pub mod rectify;
pub mod sql;
pub mod train;
pub mod viz;

/// Parses a size `HxW` (or `N` for a square).
pub fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let parts: Vec<&str> = s.split(['x', 'X']).collect();
    let num = |p: &str| p.trim().parse::<usize>().ok().filter(|&v| v > 0);
    match parts.as_slice() {
        [n] => num(n).map(|n| [n, n]),
        [h, w] => num(h).zip(num(w)).map(|(h, w)| [h, w]),
        _ => None,
    }
    .ok_or_else(|| format!("a size is HxW (e.g. 28x28) or N, with positive numbers; got `{s}`"))
}

/// The run's data: its image table through stn-table when it has one (its rows read under
/// `decode`), else `run::load_data`. Rows the table reader leaves out are reported on stderr.
pub fn table_data(
    cfg: &RunConfig,
    decode: &stn_table::codec::DecodeOptions,
    keys: Option<&stn_table::crypto::Keys>,
    allow_plaintext_output: bool,
) -> RunResult<(Dataset, Dataset)> {
    let Some(t) = &cfg.table else { return run::load_data(cfg) };
    let load = |path: &str, size: Option<[usize; 2]>| -> RunResult<Dataset> {
        // The training table at the version the run resolved; a test table at its latest.
        let at = match t.delta_version {
            Some(v) if path == t.path => stn_table::delta::DeltaAt::Version(v),
            _ => stn_table::delta::DeltaAt::Latest,
        };
        let table = stn_table::dataset::load_labelled(
            Path::new(path),
            t.image_column.as_deref(),
            &t.label_column,
            size,
            decode,
            keys,
            &at,
        )
        .map_err(|e| e.to_string())?;
        if let (Some(f), false) = (table.encrypted.first(), allow_plaintext_output) {
            return Err(format!(
                "{} is encrypted, and a run folder (checkpoints, metrics) is written in plaintext: \
                 refused (--allow-plaintext-output trains anyway)",
                f.display()
            ));
        }
        for (file, row, why) in table.skipped.iter().take(20) {
            eprintln!("left out {} row {row}: {why}", file.display());
        }
        if !table.skipped.is_empty() {
            eprintln!("{}: {} rows left out, {} used", path, table.skipped.len(), table.data.len());
        }
        Ok(table.data)
    };
    let train = load(&t.path, t.image_size)?;
    let (train, test) = match &t.test_path {
        Some(p) => {
            let test = load(p, Some([train.height, train.width]))?;
            (train, test)
        }
        None => stn_table::dataset::holdout(&train).map_err(|e| e.to_string())?,
    };
    run::prepare(cfg, train, test)
}
