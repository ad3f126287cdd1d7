//! IDX parsing and its errors, the embedded set, the distortions, image files.

use std::io::Write;

use stn_data::idx::{encode_idx, parse_idx, read_idx, IdxArray};
use stn_data::{distort, Dataset, Distortion, Image};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("stn-data-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn idx_round_trip_raw_and_gzip() {
    let a = IdxArray { dims: vec![3, 2, 4], data: (0..24).collect() };
    let raw = encode_idx(&a);
    assert_eq!(parse_idx(raw.clone(), "raw").unwrap(), a);
    assert_eq!(parse_idx(gz(&raw), "gz").unwrap(), a);
    let dir = tmpdir("idx");
    std::fs::write(dir.join("a.idx.gz"), gz(&raw)).unwrap();
    assert_eq!(read_idx(&dir.join("a.idx.gz")).unwrap(), a);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn corrupt_idx_files_are_clear_errors() {
    let a = IdxArray { dims: vec![2, 3], data: vec![1; 6] };
    let raw = encode_idx(&a);
    let err = |bytes: Vec<u8>| parse_idx(bytes, "f.idx").unwrap_err().to_string();
    assert!(err(raw[..raw.len() - 1].to_vec()).contains("truncated"), "short data");
    assert!(err(raw[..6].to_vec()).contains("truncated IDX header"));
    assert!(err(vec![0, 0]).contains("too short"));
    let mut more = raw.clone();
    more.push(9);
    assert!(err(more).contains("unexpected bytes"));
    assert!(err(b"PK\x03\x04 not idx".to_vec()).contains("not an IDX file"));
    let mut f32type = raw.clone();
    f32type[2] = 0x0D;
    assert!(err(f32type).contains("0x0d"));
    let mut zero = raw.clone();
    zero[3] = 0;
    assert!(err(zero).contains("0 dimensions"));
    let mut gzcut = gz(&raw);
    gzcut.truncate(gzcut.len() - 6);
    let e = err(gzcut);
    assert!(e.contains("gzip") || e.contains("truncated"), "{e}");
    let mut huge = vec![0, 0, 8, 3];
    for _ in 0..3 {
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
    }
    assert!(err(huge).contains("too large"));
    let e = read_idx(std::path::Path::new("/no/such/file-idx3-ubyte")).unwrap_err().to_string();
    assert!(e.contains("/no/such/file-idx3-ubyte") && e.contains("cannot read"), "{e}");
    let imgs = IdxArray { dims: vec![2, 2, 2], data: vec![0; 8] };
    let labs = IdxArray { dims: vec![3], data: vec![0; 3] };
    let e = Dataset::from_idx(imgs, labs, "pair").unwrap_err().to_string();
    assert!(e.contains("2 images but 3 labels"), "{e}");
}

#[test]
fn idx_prefix_files_are_found_raw_or_gzip() {
    let dir = tmpdir("prefix");
    let imgs = IdxArray { dims: vec![2, 2, 3], data: vec![255; 12] };
    let labs = IdxArray { dims: vec![2], data: vec![4, 7] };
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz(&encode_idx(&imgs))).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), encode_idx(&labs)).unwrap();
    let d = Dataset::load_prefix(&format!("{}/train", dir.display())).unwrap();
    assert_eq!((d.len(), d.height, d.width), (2, 2, 3));
    assert_eq!(d.labels, vec![4, 7]);
    assert!(d.images.iter().all(|&v| v == 1.0));
    let e = Dataset::load_prefix(&format!("{}/t10k", dir.display())).unwrap_err().to_string();
    assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_embedded_set() {
    let (train, test) = Dataset::embedded_split().unwrap();
    assert_eq!((train.len(), test.len()), (8000, 2000));
    assert_eq!((train.height, train.width), (28, 28));
    assert_eq!(train.num_classes(), 10);
    assert!(train.images.iter().all(|v| (0.0..=1.0).contains(v)));
    let all = Dataset::embedded().unwrap();
    assert_eq!(&all.labels[8000..], &test.labels[..]);
    // Every class is present in the test split.
    let mut seen = [false; 10];
    test.labels.iter().for_each(|&l| seen[l as usize] = true);
    assert!(seen.iter().all(|&s| s));
}

fn mass(d: &Dataset, i: usize) -> f32 {
    d.image(i).iter().sum()
}

#[test]
fn distortions_are_deterministic_and_shaped() {
    let (_, test) = Dataset::embedded_split().unwrap();
    let d = test.subset(0..64).unwrap();
    for dist in distort::ALL {
        let a = dist.apply(&d, 5).unwrap();
        let b = dist.apply(&d, 5).unwrap();
        assert_eq!(a, b, "{dist}: same seed, same data");
        let (oh, ow) = dist.out_size(28, 28);
        assert_eq!((a.height, a.width, a.len()), (oh, ow, 64), "{dist}");
        assert_eq!(a.labels, d.labels);
        assert!(a.images.iter().all(|v| v.is_finite() && (-1e-6..=1.0 + 1e-6).contains(v)), "{dist}: range");
        if dist != Distortion::None {
            assert_ne!(a, dist.apply(&d, 6).unwrap(), "{dist}: another seed, other data");
        }
        assert_eq!(dist.to_string().parse::<Distortion>().unwrap(), dist);
    }
    assert_eq!(Distortion::None.apply(&d, 1).unwrap(), d);
    assert_eq!(
        ("rts".parse::<Distortion>().unwrap(), "TC".parse::<Distortion>().unwrap()),
        (Distortion::Rts, Distortion::TranslatedCluttered)
    );
    let e = "x".parse::<Distortion>().unwrap_err().to_string();
    assert!(e.contains("none, r, rts, p, e, tc"), "{e}");
    // Rotation moves pixels but keeps (most of) the ink; RTS keeps the ink up to scale^2.
    let r = Distortion::Rotation.apply(&d, 3).unwrap();
    for i in 0..64 {
        let (m0, m1) = (mass(&d, i), mass(&r, i));
        assert!((m1 / m0 - 1.0).abs() < 0.15, "rotation changed the ink of digit {i}: {m0} -> {m1}");
    }
    let rts = Distortion::Rts.apply(&d, 3).unwrap();
    for i in 0..64 {
        let ratio = mass(&rts, i) / mass(&d, i);
        assert!((0.7 * 0.7 * 0.8..=1.2 * 1.2 * 1.1).contains(&ratio), "RTS ink ratio {ratio} for digit {i}");
    }
    // TC: the digit is on the canvas, pixel for pixel, somewhere (clutter only adds).
    let tc = Distortion::TranslatedCluttered.apply(&d, 3).unwrap();
    let img = d.image(0);
    let canvas = tc.image(0);
    let found = (0..=32).any(|oy| {
        (0..=32).any(|ox| (0..28).all(|y| (0..28).all(|x| canvas[(oy + y) * 60 + ox + x] >= img[y * 28 + x])))
    });
    assert!(found, "the digit is not on its TC canvas");
    assert!(mass(&tc, 0) > mass(&d, 0), "clutter adds ink");
}

#[test]
fn homography_maps_the_points() {
    let from = [[-0.8, -0.9], [0.85, -0.7], [0.9, 0.95], [-0.75, 0.8]];
    let to = [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]];
    let h = distort::homography(&from, &to);
    for k in 0..4 {
        let [x, y] = from[k];
        let w = h[6] * x + h[7] * y + 1.0;
        let u = (h[0] * x + h[1] * y + h[2]) / w;
        let v = (h[3] * x + h[4] * y + h[5]) / w;
        assert!((u - to[k][0]).abs() < 1e-12 && (v - to[k][1]).abs() < 1e-12, "point {k}: ({u}, {v})");
    }
}

#[test]
fn image_files_round_trip_and_bad_files_are_errors() {
    let dir = tmpdir("img");
    let gray = Image { data: (0..12).map(|i| i as f32 / 11.0).collect(), channels: 1, height: 3, width: 4 };
    std::fs::write(dir.join("g.png"), gray.to_png().unwrap()).unwrap();
    let back = Image::load(&dir.join("g.png"), 1).unwrap();
    assert_eq!((back.height, back.width, back.channels), (3, 4, 1));
    assert!(back.data.iter().zip(&gray.data).all(|(a, b)| (a - b).abs() <= 0.5 / 255.0 + 1e-6));
    let rgb =
        Image { data: (0..36).map(|i| (i % 7) as f32 / 6.0).collect(), channels: 3, height: 3, width: 4 };
    std::fs::write(dir.join("c.png"), rgb.to_png().unwrap()).unwrap();
    let back = Image::load(&dir.join("c.png"), 3).unwrap();
    assert!(back.data.iter().zip(&rgb.data).all(|(a, b)| (a - b).abs() <= 0.5 / 255.0 + 1e-6));
    // A colour file read as gray: one channel, luminance.
    let g = Image::load(&dir.join("c.png"), 1).unwrap();
    assert_eq!((g.channels, g.data.len()), (1, 12));
    // JPEG.
    let jpg = image::RgbImage::from_fn(16, 8, |x, y| image::Rgb([(x * 16) as u8, (y * 32) as u8, 128]));
    jpg.save_with_format(dir.join("p.jpeg"), image::ImageFormat::Jpeg).unwrap();
    let j = Image::load(&dir.join("p.jpeg"), 3).unwrap();
    assert_eq!((j.height, j.width), (8, 16));
    // Bad files.
    std::fs::write(dir.join("notes.png"), b"this is text, not a picture").unwrap();
    let e = Image::load(&dir.join("notes.png"), 1).unwrap_err().to_string();
    assert!(e.contains("notes.png") && e.contains("not a PNG or JPEG"), "{e}");
    let full = std::fs::read(dir.join("c.png")).unwrap();
    std::fs::write(dir.join("cut.png"), &full[..full.len() / 2]).unwrap();
    let e = Image::load(&dir.join("cut.png"), 1).unwrap_err().to_string();
    assert!(e.contains("cut.png") && e.contains("decode"), "{e}");
    let e = Image::load(&dir.join("missing.png"), 1).unwrap_err().to_string();
    assert!(e.contains("missing.png") && e.contains("cannot read"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn png_chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    c.extend_from_slice(&crc.sum().to_be_bytes());
    c
}

#[test]
fn bytes_decode_with_their_own_channels_and_encode_at_any_level() {
    use stn_data::image_io::{Encoding, PngLevel};
    let (h, w) = (5, 7);
    for c in 1..=4 {
        let pixels: Vec<u8> = (0..h * w * c).map(|i| (i * 37 % 256) as u8).collect();
        let img = Image::from_interleaved_u8(&pixels, h, w, c).unwrap();
        assert_eq!(img.to_interleaved_u8(), pixels, "{c} channels round trip");
        for level in [PngLevel::Fast, PngLevel::Level(0), PngLevel::Level(6), PngLevel::Level(9)] {
            let png = img.encode(Encoding::Png(level)).unwrap();
            let back = Image::decode(&png, 1 << 20).unwrap();
            assert_eq!((back.channels, back.height, back.width), (c, h, w));
            assert_eq!(back.to_interleaved_u8(), pixels, "PNG is lossless at {level:?}");
        }
        let jpg = img.encode(Encoding::Jpeg(95)).unwrap();
        let back = Image::decode(&jpg, 1 << 20).unwrap();
        assert_eq!(back.channels, if c <= 2 { 1 } else { 3 }, "JPEG drops alpha");
    }
    assert!(Image::from_interleaved_u8(&[0; 10], 2, 2, 3).unwrap_err().to_string().contains("10 bytes"));
    assert!(Image::from_interleaved_u8(&[0; 5], 1, 1, 5).is_err());
    // Luminance, and resizing as the localization net's input.
    let rgb = Image { data: vec![1.0, 0.0, 0.0], channels: 3, height: 1, width: 1 };
    assert!((rgb.to_gray().data[0] - 0.299).abs() < 1e-6);
    let flat = Image { data: vec![0.25; 2 * 6 * 8], channels: 2, height: 6, width: 8 };
    let small = flat.resized(3, 4).unwrap();
    assert_eq!((small.channels, small.height, small.width), (2, 3, 4));
    assert!(small.data.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    assert_eq!(flat.resized(6, 8).unwrap(), flat);
}

#[test]
fn a_header_claiming_a_huge_image_is_an_error_before_any_allocation() {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 100_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IEND", &[]));
    let e = Image::decode(&png, 1 << 26).unwrap_err().to_string();
    assert!(e.contains("claims 100000 x 100000 pixels"), "{e}");
    assert!(Image::decode(b"", 10).unwrap_err().to_string().contains("empty"));
    assert!(Image::decode(b"GIF89a....", 10).unwrap_err().to_string().contains("not a PNG or JPEG"));
}

/// `Distortion::sampler` is the map each distorted digit was made with: the original sampled
/// through it gives the distorted digit (R, RTS, P, E: the same values; TC: the digit where it
/// was placed, the clutter only adds).
#[test]
fn samplers_are_the_maps_the_digits_were_distorted_with() {
    use stn_data::distort::SamplerMap;
    use stn_kernels::{
        affine_sample, projective_sample, tps_sample, Interpolation, Padding, SampleOptions, TensorRef, Tps,
    };
    let (_, test) = Dataset::embedded_split().unwrap();
    let d = test.subset(0..12).unwrap();
    let opts = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false);
    for dist in [
        Distortion::Rotation,
        Distortion::Rts,
        Distortion::Projective,
        Distortion::Elastic,
        Distortion::TranslatedCluttered,
    ] {
        let made = dist.apply(&d, 5).unwrap();
        let (oh, ow) = (made.height, made.width);
        for i in [0, 7, 11] {
            let x = d.image(i);
            let shape = [1, 1, d.height, d.width];
            let input = TensorRef::new(x, &shape);
            let got = match dist.sampler(5, i, d.height, d.width) {
                SamplerMap::Affine(a) => {
                    let p: Vec<f32> = a.iter().map(|&v| v as f32).collect();
                    affine_sample(input, TensorRef::new(&p, &[1, 2, 3]), &[oh, ow], &opts).unwrap().data
                }
                SamplerMap::Projective(h) => {
                    let p: Vec<f32> = h.iter().map(|&v| v as f32).collect();
                    projective_sample(input, TensorRef::new(&p, &[1, 8]), &[oh, ow], &opts).unwrap().data
                }
                SamplerMap::Tps4x4(t) => {
                    let p: Vec<f32> = t.iter().map(|&v| v as f32).collect();
                    tps_sample(input, TensorRef::new(&p, &[1, 16, 2]), &Tps::default(), &[oh, ow], &opts)
                        .unwrap()
                        .data
                }
            };
            let want = made.image(i);
            if dist == Distortion::TranslatedCluttered {
                assert!(
                    got.iter().zip(want).all(|(g, w)| *g <= w + 1e-5),
                    "{dist}: image {i} under the canvas"
                );
                let (sg, sx): (f32, f32) = (got.iter().sum(), x.iter().sum());
                assert!(
                    (sg - sx).abs() < 1e-3 * sx.max(1.0),
                    "{dist}: the whole digit placed ({sg} vs {sx})"
                );
            } else {
                assert_eq!(got, want, "{dist}: image {i}");
            }
        }
    }
}
