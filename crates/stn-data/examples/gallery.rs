//! Writes a PNG with 8 test digits under every distortion, one row per distortion (none, r,
//! rts, p, e, tc), each image scaled to a 60 x 60 cell:
//! `cargo run --release -p stn-data --example gallery -- gallery.png [SEED]`.

use stn_data::{distort, Dataset, Image};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "gallery.png".into());
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let (_, test) = Dataset::embedded_split()?;
    let digits = test.subset(0..8)?;
    let cell = 62;
    let (rows, cols) = (distort::ALL.len(), digits.len());
    let mut canvas = Image {
        data: vec![0.25; rows * cols * cell * cell],
        channels: 1,
        height: rows * cell,
        width: cols * cell,
    };
    for (r, d) in distort::ALL.iter().enumerate() {
        let img = d.apply(&digits, seed)?;
        for c in 0..cols {
            let (h, w) = (img.height, img.width);
            let (oy, ox) = (r * cell + (cell - h) / 2, c * cell + (cell - w) / 2);
            for y in 0..h {
                for x in 0..w {
                    canvas.data[(oy + y) * canvas.width + ox + x] = img.image(c)[y * w + x];
                }
            }
        }
    }
    std::fs::write(&out, canvas.to_png()?)?;
    eprintln!("wrote {out}");
    Ok(())
}
