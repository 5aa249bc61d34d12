//! CMAF fMP4 segmenter (being written).
