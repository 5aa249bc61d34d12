//! The parts of Prometheus's text format the ingest benchmark reads from the streamer's
//! `/metrics`: unlabelled samples and one histogram's buckets.
//!
//! Contract: pure; a sample that is missing or does not parse reads as absent, never as zero.

use std::collections::BTreeMap;

/// An unlabelled sample (`name value`) from Prometheus text.
pub fn scalar(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A Prometheus histogram: cumulative bucket counts by upper bound.
#[derive(Debug, Default, PartialEq)]
pub struct Histogram {
    buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn parse(text: &str, name: &str) -> Self {
        let mut h = Self::default();
        let bucket = format!("{name}_bucket{{le=\"");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket) {
                let parsed = rest.split_once("\"} ").and_then(|(le, v)| {
                    Some((
                        le.parse::<f64>().ok()?,
                        v.trim().parse::<f64>().ok()? as u64,
                    ))
                });
                if let Some(b) = parsed {
                    h.buckets.push(b);
                }
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h.sum = scalar(text, &format!("{name}_sum")).unwrap_or(0.0);
        h.count = scalar(text, &format!("{name}_count")).unwrap_or(0.0) as u64;
        h
    }

    /// What was observed since `earlier`.
    pub fn delta(&self, earlier: &Self) -> Self {
        let before: BTreeMap<u64, u64> = earlier
            .buckets
            .iter()
            .map(|&(le, c)| (le.to_bits(), c))
            .collect();
        Self {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| {
                    (
                        le,
                        c.saturating_sub(*before.get(&le.to_bits()).unwrap_or(&0)),
                    )
                })
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The upper bound of the first bucket holding the `p` quantile (nearest rank), in the
    /// histogram's unit; `None` with no observations, infinite past the last finite bucket.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p * self.count as f64).ceil() as u64).max(1);
        self.buckets
            .iter()
            .find(|&&(_, c)| c >= rank)
            .map(|&(le, _)| le)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_bucket_upper_bounds_of_the_window() {
        let metric = |counts: [u64; 4], sum: f64| {
            format!(
                "# TYPE m histogram\nm_sum {sum}\nm_count {}\n\
                 m_bucket{{le=\"0.005\"}} {}\nm_bucket{{le=\"0.01\"}} {}\n\
                 m_bucket{{le=\"0.015\"}} {}\nm_bucket{{le=\"+Inf\"}} {}\n",
                counts[3], counts[0], counts[1], counts[2], counts[3]
            )
        };
        let before = Histogram::parse(&metric([5, 5, 5, 5], 0.01), "m");
        let after = Histogram::parse(&metric([5, 55, 100, 105], 1.0), "m");
        assert_eq!(before.count, 5);
        let window = after.delta(&before);
        assert_eq!(window.count, 100);
        assert_eq!(window.quantile(0.50), Some(0.01));
        assert_eq!(window.quantile(0.95), Some(0.015));
        assert_eq!(window.quantile(0.99), Some(f64::INFINITY));
        assert!((window.sum - 0.99).abs() < 1e-9);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn scalars_skip_labelled_and_longer_names() {
        let text = "s_total{a=\"b\"} 3\ns_total_x 4\ns_total 7\n";
        assert_eq!(scalar(text, "s_total"), Some(7.0));
        assert_eq!(scalar(text, "missing"), None);
    }
}
