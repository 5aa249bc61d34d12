//! The clock code `slotcast-bench glass` burns into each frame: the server clock's time in
//! milliseconds, modulo 2^40, with an 8-bit check, as 48 black or white blocks a viewer reads
//! back from the picture on screen.
//!
//! Contract: pure (bytes in, bytes out). The reader that counts is the page's
//! (`tests/browser/glass-code.mjs`, `readCode`); the one here is for tests, and the tests
//! prove both read what [`render`] writes, through x264 and back. The geometry is given on a
//! 640x360 picture and read as fractions of the picture, so a scaled picture reads the same:
//! 16 columns by 3 rows of 32 px blocks from (64, 32), bit 47 (the time's highest) first, row
//! by row; white is 1. Each block is read by the mean of its middle half, and a mean that is
//! neither clearly black nor clearly white makes the frame unreadable, as does a wrong check.
//! Each block is 2x2 of x264's 16 px macroblocks, on their grid, so each macroblock is flat
//! and only its edges can ring; the middles read are far from them.

/// The picture the bench publishes (yuv420p).
pub const WIDTH: usize = 640;
pub const HEIGHT: usize = 360;
/// One yuv420p frame: the luma plane and two quarter-size chroma planes.
pub const FRAME_BYTES: usize = WIDTH * HEIGHT * 3 / 2;
/// The time is carried modulo this (about 34.8 years of milliseconds).
pub const TIME_MODULUS: u64 = 1 << 40;
/// The code's geometry on the 640x360 picture.
pub const BLOCK: usize = 32;
pub const COLUMNS: usize = 16;
pub const ROWS: usize = 3;
pub const LEFT: usize = 64;
pub const TOP: usize = 32;
const BITS: usize = COLUMNS * ROWS;

/// Luma of a 0 and a 1 (video range, as x264 signals by default), and of the background.
const BLACK: u8 = 16;
const WHITE: u8 = 235;
const BACKGROUND: u8 = 96;
/// A block's mean luma must be below the first (0) or above the second (1).
#[cfg(test)]
const READ_BELOW: f64 = 96.0;
#[cfg(test)]
const READ_ABOVE: f64 = 160.0;

/// CRC-8 (polynomial 0x07, initial value 0xFF) of the time's five bytes, highest first. Not
/// starting from zero keeps an all-black picture (time 0, check 0) from passing.
pub fn check(time: u64) -> u8 {
    let mut crc: u8 = 0xFF;
    for k in (0..5).rev() {
        crc ^= (time >> (8 * k)) as u8;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The 48-bit word for `ms`: the time modulo 2^40, then its check.
pub fn word(ms: u64) -> u64 {
    let time = ms % TIME_MODULUS;
    (time << 8) | u64::from(check(time))
}

/// The time in a word, if its check holds.
#[cfg(test)]
pub fn time_of(word: u64) -> Option<u64> {
    let time = (word >> 8) & (TIME_MODULUS - 1);
    (word >> 48 == 0 && check(time) == word as u8).then_some(time)
}

/// Writes frame number `n` into `frame` (yuv420p, [`WIDTH`]x[`HEIGHT`]): the code for `ms`
/// on a grey background, and a white bar that moves with `n` below it, so the encoder has
/// motion to code as it would in a broadcast.
pub fn render(frame: &mut [u8], ms: u64, n: u64) {
    assert_eq!(
        frame.len(),
        FRAME_BYTES,
        "a yuv420p frame of WIDTH x HEIGHT"
    );
    let (luma, chroma) = frame.split_at_mut(WIDTH * HEIGHT);
    luma.fill(BACKGROUND);
    chroma.fill(128);
    let word = word(ms);
    for bit in 0..BITS {
        let one = (word >> (BITS - 1 - bit)) & 1 == 1;
        let (x0, y0) = block_origin(bit);
        for y in y0..y0 + BLOCK {
            luma[y * WIDTH + x0..y * WIDTH + x0 + BLOCK].fill(if one { WHITE } else { BLACK });
        }
    }
    let bar = (n as usize * 8) % WIDTH;
    for y in TOP + ROWS * BLOCK + 64..HEIGHT - 32 {
        luma[y * WIDTH + bar..y * WIDTH + (bar + 48).min(WIDTH)].fill(WHITE);
    }
}

/// Top-left corner of bit `bit`'s block on the 640x360 picture.
fn block_origin(bit: usize) -> (usize, usize) {
    (
        LEFT + (bit % COLUMNS) * BLOCK,
        TOP + (bit / COLUMNS) * BLOCK,
    )
}

/// Reads the code from a luma plane of `width` x `height` (any size: the geometry scales):
/// the time modulo 2^40, or `None` when a block is unclear or the check fails.
#[cfg(test)]
pub fn read(luma: &[u8], width: usize, height: usize) -> Option<u64> {
    let (sx, sy) = (width as f64 / WIDTH as f64, height as f64 / HEIGHT as f64);
    let mut word = 0u64;
    for bit in 0..BITS {
        let (x0, y0) = block_origin(bit);
        // The middle half of the block, in the picture's own pixels.
        let quarter = BLOCK as f64 / 4.0;
        let xs = ((x0 as f64 + quarter) * sx).round() as usize;
        let xe = ((x0 as f64 + 3.0 * quarter) * sx).round() as usize;
        let ys = ((y0 as f64 + quarter) * sy).round() as usize;
        let ye = ((y0 as f64 + 3.0 * quarter) * sy).round() as usize;
        let (mut sum, mut count) = (0u64, 0u64);
        for y in ys..ye.max(ys + 1) {
            for x in xs..xe.max(xs + 1) {
                sum += u64::from(*luma.get(y * width + x)?);
                count += 1;
            }
        }
        let mean = sum as f64 / count as f64;
        let one = if mean > READ_ABOVE {
            true
        } else if mean < READ_BELOW {
            false
        } else {
            return None;
        };
        word = (word << 1) | u64::from(one);
    }
    time_of(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_785_000_000_123; // 2026, past 2^40 ms: the modulus is in play

    #[test]
    fn a_word_gives_back_its_time_modulo_2_to_the_40() {
        for ms in [0, 1, 33, NOW, TIME_MODULUS - 1, TIME_MODULUS, u64::MAX] {
            assert_eq!(time_of(word(ms)), Some(ms % TIME_MODULUS), "{ms}");
        }
        assert!(word(u64::MAX) < 1 << 48);
    }

    #[test]
    fn any_one_flipped_bit_fails_the_check_and_plain_pictures_read_as_nothing() {
        let w = word(NOW);
        for bit in 0..48 {
            assert_eq!(time_of(w ^ (1 << bit)), None, "bit {bit}");
        }
        assert_eq!(time_of(0), None, "all black");
        assert_eq!(time_of((1 << 48) - 1), None, "all white");
        let mut frame = vec![BLACK; WIDTH * HEIGHT];
        assert_eq!(read(&frame, WIDTH, HEIGHT), None);
        frame.fill(WHITE);
        assert_eq!(read(&frame, WIDTH, HEIGHT), None);
        frame.fill(BACKGROUND);
        assert_eq!(read(&frame, WIDTH, HEIGHT), None, "grey is neither");
    }

    #[test]
    fn a_rendered_frame_reads_back_at_its_size_and_scaled() {
        let mut frame = vec![0; FRAME_BYTES];
        for (n, ms) in [NOW, NOW + 33, 7, TIME_MODULUS - 1].into_iter().enumerate() {
            render(&mut frame, ms, n as u64 * 37);
            let luma = &frame[..WIDTH * HEIGHT];
            assert_eq!(read(luma, WIDTH, HEIGHT), Some(ms % TIME_MODULUS));
            // Nearest-neighbour to 3/4 and to 3/2 of the size.
            for (w, h) in [(480, 270), (960, 540)] {
                let scaled: Vec<u8> = (0..w * h)
                    .map(|i| luma[(i / w) * HEIGHT / h * WIDTH + (i % w) * WIDTH / w])
                    .collect();
                assert_eq!(read(&scaled, w, h), Some(ms % TIME_MODULUS), "{w}x{h}");
            }
        }
    }

    #[test]
    fn the_moving_bar_stays_clear_of_the_code() {
        let mut frame = vec![0; FRAME_BYTES];
        for n in 0..200 {
            render(&mut frame, NOW, n);
            assert_eq!(
                read(&frame[..WIDTH * HEIGHT], WIDTH, HEIGHT),
                Some(NOW % TIME_MODULUS)
            );
        }
    }

    /// The page reads what Rust writes: frames rendered here, coded by x264 as the bench codes
    /// them (at a third of its bitrate), decoded by ffmpeg to RGBA and read by
    /// `tests/browser/glass-code.mjs` under Node, and to grey and read here. Needs ffmpeg and
    /// Node (scripts/services installs both).
    #[test]
    fn the_page_reader_and_this_one_read_what_x264_made_of_it() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let times: Vec<u64> = (0..45).map(|n| NOW + n * 33 + n % 7).collect();
        let mut raw = Vec::new();
        let mut frame = vec![0; FRAME_BYTES];
        for (n, ms) in times.iter().enumerate() {
            render(&mut frame, *ms, n as u64);
            raw.extend_from_slice(&frame);
        }
        let (yuv, mp4) = (dir.path().join("in.yuv"), dir.path().join("coded.mp4"));
        std::fs::write(&yuv, &raw).unwrap();
        let size = format!("{WIDTH}x{HEIGHT}");
        let run = |args: &[&str]| {
            let out = Command::new("ffmpeg")
                .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
                .args(args)
                .output()
                .expect("ffmpeg is needed (scripts/services installs it)");
            assert!(
                out.status.success(),
                "ffmpeg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let mut encode = vec![
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", &size, "-r", "30",
        ];
        encode.extend(["-i", yuv.to_str().unwrap()]);
        encode.extend(super::super::source::X264);
        encode.extend(["-b:v", "330k", mp4.to_str().unwrap()]);
        run(&encode);
        let decoded = |pix_fmt: &str, size: &str, name: &str| {
            let path = dir.path().join(name);
            let (input, output) = (mp4.to_str().unwrap(), path.to_str().unwrap());
            let scale = format!("scale={size}:flags=bilinear");
            run(&[
                "-i", input, "-vf", &scale, "-f", "rawvideo", "-pix_fmt", pix_fmt, output,
            ]);
            path
        };

        let gray = std::fs::read(decoded("gray", "640:360", "out.gray")).unwrap();
        let ours: Vec<Option<u64>> = gray
            .chunks(WIDTH * HEIGHT)
            .map(|f| read(f, WIDTH, HEIGHT))
            .collect();
        let want: Vec<Option<u64>> = times.iter().map(|t| Some(t % TIME_MODULUS)).collect();
        assert_eq!(ours, want, "this reader, after x264");

        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/browser/glass-code.mjs");
        let want: Vec<String> = times
            .iter()
            .map(|t| (t % TIME_MODULUS).to_string())
            .collect();
        // At the picture's own size, as the page draws it, and scaled as a player might.
        for (w, h) in [(WIDTH, HEIGHT), (960, 540)] {
            let rgba = decoded("rgba", &format!("{w}:{h}"), &format!("out-{w}.rgba"));
            let out = Command::new("node")
                .arg(&script)
                .arg(&rgba)
                .args([w.to_string(), h.to_string()])
                .output()
                .expect("Node is needed (scripts/services installs it)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(theirs, want, "the page's reader at {w}x{h}, after x264");
        }
    }
}
