//! `stn explain`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use stn_cli::run;
use stn_models::rectify::Rectifier;

use super::args::DistortionArg;

/// Arguments of `stn explain` (its help is on the subcommand in main.rs).
#[derive(clap::Args)]
pub struct Args {
    /// The run folder written by `stn train` (an ST model).
    #[arg(long)]
    pub model: PathBuf,
    /// An image table to explain (a Parquet file, a folder of them, or a Delta table), with a
    /// label column; default: the embedded digits (--data).
    #[arg(long, conflicts_with = "images")]
    pub table: Option<PathBuf>,
    /// A folder of image files (PNG, JPEG) to explain instead, without labels: each made gray
    /// and resized to the transformer's localization size (what it sees anyway).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The image column of --table (default: detected).
    #[arg(long, requires = "table")]
    pub image_column: Option<String>,
    /// The label column of --table.
    #[arg(long, default_value = "label", requires = "table")]
    pub label_column: String,
    /// The data set when there is no --table: `mnist10k`, the 10,000 embedded test digits.
    #[arg(long, default_value = "mnist10k", conflicts_with_all = ["table", "images"], value_parser = ["mnist10k"])]
    pub data: String,
    /// Distortion applied to the images first, whose true inverse the report compares the
    /// recovered warps with (default: the model's for --data, none for --table).
    #[arg(long, value_enum)]
    pub distortion: Option<DistortionArg>,
    /// Seed of the distortion.
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
    /// Images explained (the first N).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rows: u64,
    /// The report folder: report.html (one self-contained page) and explain.json.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub key_args: super::args::KeyArgs,
    #[command(flatten)]
    pub rules: super::args::InputRules,
    #[command(flatten)]
    pub delta: super::args::DeltaReadArgs,
}

/// The epochs of a run folder's `metrics.jsonl` (none when it has no such file).
pub fn metrics_of(dir: &Path) -> Result<Vec<run::EpochMetrics>> {
    let path = dir.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Vec::new()) };
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a metrics line", path.display(), i + 1))
        })
        .collect()
}

/// The image files of `dir` (PNG, JPEG; in name order, the first `rows`) as one gray set of
/// `size`, every label 0. Unreadable files are said on stderr and left out.
fn image_folder(dir: &Path, size: [usize; 2], rows: usize) -> Result<stn_data::Dataset> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--images {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                let x = x.to_ascii_lowercase();
                x == "png" || x == "jpg" || x == "jpeg"
            })
        })
        .collect();
    files.sort();
    let mut images = Vec::new();
    let mut n = 0;
    for f in files {
        if n == rows {
            break;
        }
        match stn_data::Image::load(&f, 1).and_then(|i| i.resized(size[0], size[1])) {
            Ok(img) => {
                images.extend_from_slice(&img.data);
                n += 1;
            }
            Err(e) => eprintln!("left out {}: {e}", f.display()),
        }
    }
    if n == 0 {
        anyhow::bail!("--images {}: no PNG or JPEG file could be read", dir.display());
    }
    Ok(stn_data::Dataset { images, labels: vec![0; n], height: size[0], width: size[1] })
}

/// Runs the command.
pub fn exec(args: Args) -> Result<ExitCode> {
    args.rules.apply()?;
    let (net, cfg) = run::load_run(&args.model).map_err(anyhow::Error::msg).context("stn explain")?;
    let rectifier = Rectifier::from_run(&args.model).map_err(anyhow::Error::msg).context("stn explain")?;
    let rows = args.rows as usize;
    let (dist, base, data, source) = match &args.table {
        None if args.images.is_some() => {
            let dir = args.images.as_deref().expect("checked");
            let data = image_folder(dir, rectifier.localization_size(), rows)?;
            let dist = args.distortion.map_or("none", |d| d.name()).to_string();
            let d: stn_data::Distortion = dist.parse()?;
            let base = [data.height, data.width];
            (
                dist.clone(),
                base,
                d.apply(&data, args.seed)?,
                format!("the images of {} (no labels)", dir.display()),
            )
        }
        Some(path) => {
            let dist = args.distortion.map_or("none", |d| d.name()).to_string();
            let d: stn_data::Distortion = dist.parse()?;
            let size = if d == stn_data::Distortion::None { cfg.model.input_size } else { [28, 28] };
            let t = stn_table::dataset::load_labelled(
                path,
                args.image_column.as_deref(),
                &args.label_column,
                Some(size),
                &args.rules.decode(stn_table::codec::DEFAULT_MAX_PIXELS),
                args.key_args.keys(None)?.as_ref(),
                &args.delta.at(),
            )
            .context("stn explain --table")?;
            if !t.skipped.is_empty() {
                eprintln!("{}: {} rows left out (bad image or label)", path.display(), t.skipped.len());
            }
            let data = t.data.subset(0..rows.min(t.data.len()))?;
            (dist.clone(), size, d.apply(&data, args.seed)?, format!("table {}", path.display()))
        }
        None => {
            let dist = args.distortion.map_or(cfg.distortion.clone(), |d| d.name().to_string());
            let d: stn_data::Distortion = dist.parse()?;
            let (_, test) = stn_data::Dataset::embedded_split()?;
            let data = test.subset(0..rows.min(test.len()))?;
            let base = [data.height, data.width];
            (dist, base, d.apply(&data, args.seed)?, format!("the embedded test digits ({})", args.data))
        }
    };
    let d: stn_data::Distortion = dist.parse()?;
    // The distortion's map of each image (of the images it distorted, `base` in size), so the
    // recovered warps can be compared with it.
    let samplers: Option<Vec<_>> = (d != stn_data::Distortion::None)
        .then(|| (0..data.len()).map(|i| d.sampler(args.seed, i, base[0], base[1])).collect());
    let explained = stn_table::explain::explain_dataset(&rectifier, &data, samplers.as_deref())
        .map_err(anyhow::Error::msg)
        .context("stn explain")?;
    // Images without labels have no error rate.
    let error = match args.images {
        Some(_) => None,
        None => Some(run::error_rate(&net, &data, 256).map_err(anyhow::Error::msg)?),
    };
    let source = format!("{source}, distortion {dist} (seed {}), first {} images", args.seed, data.len());
    let mut results = vec![
        ("model".to_string(), args.model.display().to_string()),
        ("model file".to_string(), rectifier.model_id().unwrap_or("-").to_string()),
        ("transform".to_string(), format!("{:?}", rectifier.transform())),
        ("images".to_string(), data.len().to_string()),
    ];
    if let Some(e) = error {
        results.push(("error rate on them".to_string(), format!("{:.2}%", 100.0 * e)));
    }
    let input = stn_cli::report::ReportInput {
        title: format!("What the transformer of {} does", args.model.display()),
        source,
        rows: &explained,
        data: &data,
        rectifier: &rectifier,
        metrics: &metrics_of(&args.model)?,
        results,
    };
    let page = stn_cli::report::write_report(&input, &args.out)
        .map_err(anyhow::Error::msg)
        .context("stn explain")?;
    match error {
        Some(e) => {
            println!(
                "wrote {} ({} images explained, error rate {:.2}%)",
                page.display(),
                explained.len(),
                100.0 * e
            )
        }
        None => println!("wrote {} ({} images explained)", page.display(), explained.len()),
    }
    Ok(ExitCode::SUCCESS)
}
