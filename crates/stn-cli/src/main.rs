//! `stn`: spatial transformers on distorted digits, image files and image tables.
//! Progress and logs go to stderr, results to stdout (`--json` for machines). One file per
//! subcommand under `commands/`; this file only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

#[derive(Parser)]
#[command(name = "stn", version, about = "Spatial Transformer Networks: train, evaluate, rectify images and image tables, SQL", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a classifier on distorted digits; writes RUN_DIR/model.stn after every epoch and
    /// RUN_DIR/metrics.jsonl (one JSON object per epoch).
    ///
    /// Example: stn train --distortion rts --model st-cnn --transform affine --epochs 3 --out runs/rts-st
    ///
    /// On a table: stn train --table digits.parquet --image-column image --label-column label --out runs/t
    Train(commands::train::Args),
    /// The main job: on the embedded digits under RTS, train a CNN and an ST-CNN with the same
    /// budget, print their test errors, and write a report (Markdown, the paper's figure, curves).
    ///
    /// Example: stn demo --out demo-out
    Demo(commands::demo::Args),
    /// Apply a trained transformer to image files (PNG, JPEG; gray or colour; any size), writing
    /// DIR/<name>.png and DIR/theta.jsonl; or to an image table (--table: a Parquet file or a
    /// folder of them), writing every input column plus stn_image, stn_theta and stn_error.
    /// Bad inputs are reported and skipped (a bad row gets nulls and its reason); the exit code
    /// is 1 if any input failed.
    ///
    /// Examples: stn rectify --model runs/rts-st scans/*.png --out rectified;
    /// stn rectify --model runs/rts-st --table in.parquet --out out.parquet;
    /// on a Ballista cluster (stn-scheduler, stn-executor):
    /// stn rectify --model runs/rts-st --table /shared/tables/digits --out out --cluster df://10.0.0.5:50050
    Rectify(commands::rectify::Args),
    /// Run SQL over image tables with the transformer's functions stn_rectify(image),
    /// stn_theta(image), stn_error(image) and stn_rectified(image) (all three in one pass);
    /// prints the rows (or --json lines). Here, or on a Ballista cluster (--cluster).
    ///
    /// Examples: stn sql --model runs/rts-st "SELECT id, stn_theta(image) AS theta FROM 'in.parquet'";
    /// stn sql --model runs/rts-st "COPY (SELECT id, stn_rectify(image) AS image FROM 'in.parquet') TO 'out.parquet'";
    /// stn sql --model runs/rts-st --cluster df://10.0.0.5:50050 "SELECT id, stn_theta(image) FROM '/shared/tables/digits/'"
    Sql(commands::sql::Args),
    /// Write the embedded digits as a Parquet image table (Hugging Face convention, or --plain).
    ///
    /// Example: stn export-digits --distortion rts --out digits.parquet
    ExportDigits(commands::export::Args),
    /// Pictures: the paper's figure for a trained model (inputs with the outline of their
    /// sampling grids, the transformer's outputs, predicted labels), or with --curves the test
    /// error per epoch of one or more runs.
    ///
    /// With --augment SPEC: augmented digits with their keypoints.
    ///
    /// Examples: stn viz --model runs/rts-st --distortion rts --count 32 --out fig.png;
    /// stn viz --augment "affine:rot=30;tps:0.1" --count 8 --out aug.png;
    /// stn viz --curves runs/rts-cnn --curves runs/rts-st --out curves.png
    Viz(commands::viz::Args),
    /// Benchmarks: the kernels on the PyTorch peer's cases (ms per call; per figure the bytes it
    /// must move, the bandwidth reached and a copy of the same bytes timed alongside, the
    /// machine's limit), and training and inference throughput of the tutorial ST-CNN and its
    /// plain CNN (28 x 28, batch 64).
    ///
    /// Example: stn bench --json > bench.json
    Bench(commands::bench::Args),
    /// Augmented copies of image files (--images DIR: DIR-OUT/<name>-<copy>.png and
    /// augment.jsonl with each copy's warp) or of an image table (--table: every row --copies
    /// times, the image warped, plus stn_copy, stn_augment (the warp as JSON) and stn_error).
    /// Copy k of image i is drawn from (--seed, k, i) alone.
    ///
    /// Examples: stn augment --spec "affine:rot=30,scale=0.8-1.2;tps:0.1" --images scans --out aug --copies 4;
    /// stn augment --spec "perspective:0.3;hflip" --table in.parquet --out aug.parquet --copies 2 --seed 7
    Augment(commands::augment::Args),
    /// Error rate of a trained model on distorted digits (the embedded test split by default),
    /// on IDX files, or on an image table (--table).
    ///
    /// Example: stn eval --model runs/rts-st --distortion rts --seed 5 --json
    Eval(commands::eval::Args),
    /// What a trained transformer does to a set of images, as one self-contained HTML page
    /// (REPORT_DIR/report.html) and JSON (explain.json): theta decomposed into rotation, scales,
    /// shear, translation and zoom (perspective, bending for other families), their
    /// distributions overall and per class, the mean warp of each class, the share of output
    /// samples falling outside the input, the most extreme warps as thumbnails, the training
    /// curves, and, for a known distortion, how well the recovered warp inverts it.
    ///
    /// Examples: stn explain --model runs/rts-st --data mnist10k --distortion rts --out report;
    /// stn explain --model runs/rts-st --table labelled.parquet --out report
    Explain(commands::explain::Args),
    /// Import PyTorch-trained weights of the PyTorch tutorial's spatial transformer network
    /// (its state_dict as .pt or .safetensors) as a run folder for every other command.
    ///
    /// Example: stn import-torch stn_tutorial.pt --arch tutorial --out runs/from-torch
    ImportTorch(commands::import_torch::Args),
}

fn main() -> ExitCode {
    stn_kernels::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => commands::train::exec(a),
        Command::Demo(a) => commands::demo::exec(a),
        Command::Rectify(a) => commands::rectify::exec(a),
        Command::Sql(a) => commands::sql::exec(a),
        Command::ExportDigits(a) => commands::export::exec(a),
        Command::Viz(a) => commands::viz::exec(a),
        Command::Bench(a) => commands::bench::exec(a),
        Command::Eval(a) => commands::eval::exec(a),
        Command::Explain(a) => commands::explain::exec(a),
        Command::Augment(a) => commands::augment::exec(a),
        Command::ImportTorch(a) => commands::import_torch::exec(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
