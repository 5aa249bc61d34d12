//! AAC AudioSpecificConfigs (as RTMP's sequence header carries them), arbitrary: read or
//! refused with words, never a panic; what is read describes a track the segmenter can time.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(config) = slotcast_streamer::media::aac::parse_asc(data) {
        assert!(config.sample_rate > 0);
        assert!((1..=8).contains(&config.channels));
        assert!(config.frame_len == 960 || config.frame_len == 1024);
        let mut clock = slotcast_streamer::media::aac::AudioClock::new(config.frame_len);
        let first = clock.stamp(0);
        assert_eq!(
            clock.stamp(i64::from(config.frame_len)),
            first + i64::from(config.frame_len)
        );
    }
});
