//! `stn demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `stn demo` (its help is on the subcommand in main.rs).
#[derive(clap::Args)]
pub struct Args {
    /// Output folder (must not hold a demo yet).
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Epochs of each model (12: the README results table's budget, so the default demo
    /// reproduces its RTS row).
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Train on the first N digits only (0: all 8,000).
    #[arg(long, default_value_t = 0)]
    pub train_size: usize,
    /// Test on the first N digits only (0: all 2,000).
    #[arg(long, default_value_t = 0)]
    pub test_size: usize,
}

/// Runs the command.
pub fn exec(args: Args) -> Result<ExitCode> {
    let Args { out, epochs, seed, train_size, test_size } = args;
    let opts = stn_cli::demo::DemoOptions { out, epochs, train_size, test_size, seed };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let start = std::time::Instant::now();
    let mut progress = |name: &str, epoch: usize, b: usize, n: usize, loss: f64, acc: f64, ips: f64| {
        bar.set_prefix(format!("{name} epoch {epoch}/{epochs}"));
        bar.set_length(n as u64);
        bar.set_position(b as u64);
        bar.set_message(format!("loss {loss:.4} acc {:.1}% {ips:.0} img/s", 100.0 * acc));
    };
    let r = stn_cli::demo::run_demo(&opts, &mut progress).map_err(anyhow::Error::msg).context("stn demo")?;
    bar.finish_and_clear();
    let (c, s) = (r.cnn.last().expect("epochs"), r.st_cnn.last().expect("epochs"));
    println!("RTS-distorted digits, {epochs} epochs each ({:.0} s):", start.elapsed().as_secs_f64());
    println!("  CNN             test error {:6.2}%", 100.0 * c.test_error);
    println!("  ST-CNN (affine) test error {:6.2}%", 100.0 * s.test_error);
    println!("report: {} (and {}: the transformer explained)", r.report.display(), r.page.display());
    Ok(ExitCode::SUCCESS)
}
