//! `stn export-digits`: the embedded digits as an image table.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use stn_table::export::{write_dataset, ExportLayout};

use super::args::DistortionArg;

/// Write the embedded digits (all 10,000 in their order, or a distorted copy) as a Parquet
/// image table (columns id, label, image as PNG), or with `--images` as PNG files.
#[derive(clap::Args)]
pub struct Args {
    /// The Parquet file to write, or with `--images` the folder to create (never overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Write one PNG file per digit (OUT/NNNNN-LABEL.png) instead of a table.
    #[arg(long, conflicts_with_all = ["plain", "row_group"])]
    pub images: bool,
    /// Distortion of the digits.
    #[arg(long, value_enum, default_value = "none")]
    pub distortion: DistortionArg,
    /// Seed of the distortion.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only the first N digits (0: all).
    #[arg(long, default_value_t = 0)]
    pub rows: usize,
    /// A plain binary image column instead of Hugging Face's struct<bytes, path>.
    #[arg(long)]
    pub plain: bool,
    /// Rows per row group.
    #[arg(long, default_value_t = 1000)]
    pub row_group: usize,
}

/// Runs the command.
pub fn exec(args: Args) -> Result<ExitCode> {
    let all = stn_data::Dataset::embedded()?;
    let data = if args.rows == 0 || args.rows >= all.len() { all } else { all.subset(0..args.rows)? };
    let d: stn_data::Distortion = args.distortion.name().parse()?;
    let data = d.apply(&data, args.seed)?;
    if args.images {
        let paths = stn_table::export::write_pngs(&data, &args.out).context("stn export-digits")?;
        println!(
            "wrote {} digits ({} x {}) as PNG files to {}",
            paths.len(),
            data.height,
            data.width,
            args.out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let layout = if args.plain { ExportLayout::Binary } else { ExportLayout::HuggingFace };
    write_dataset(&data, &args.out, layout, args.row_group).context("stn export-digits")?;
    println!("wrote {} digits ({} x {}) to {}", data.len(), data.height, data.width, args.out.display());
    Ok(ExitCode::SUCCESS)
}
