//! Latency percentiles from an hdrhistogram: the handshake statistics of `serve` and the
//! latency rows of `bench` share this one report type.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram records: one hour, in microseconds. Longer values saturate.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// A histogram of latencies in microseconds, 3 significant digits, 1 µs to one hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3)
        .expect("constant bounds are valid: 1 <= low, high >= 2 * low, sigfig 3")
}

/// Records one latency into a histogram made by [`new_histogram`], saturating at its bounds.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LatencyReport {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencyReport {
    /// Summarises a histogram whose values are microseconds (see [`new_histogram`]).
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// One line: `count 1200  p50 85µs  p90 120µs  p99 310µs  p99.9 1.20ms  max 4.10ms`.
impl fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "count {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            self.count,
            Micros(self.p50_us),
            Micros(self.p90_us),
            Micros(self.p99_us),
            Micros(self.p999_us),
            Micros(self.max_us)
        )
    }
}

/// A duration in microseconds printed with a unit that keeps it short.
pub struct Micros(pub u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us < 1_000 {
            write!(f, "{us}µs")
        } else if us < 1_000_000 {
            write!(f, "{:.2}ms", us as f64 / 1e3)
        } else {
            write!(f, "{:.2}s", us as f64 / 1e6)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_histogram() {
        let mut histogram = new_histogram();
        for us in 1..=1000 {
            record(&mut histogram, Duration::from_micros(us));
        }
        let report = LatencyReport::from_histogram(&histogram);
        assert_eq!(report.count, 1000);
        assert_eq!(report.p50_us, 500);
        assert_eq!(report.p90_us, 900);
        assert_eq!(report.p99_us, 990);
        assert_eq!(report.max_us, 1000);
        let json = serde_json::to_value(report).expect("serialises");
        assert_eq!(json["p999_us"], 999);
        assert!(report.to_string().contains("p99.9 999µs"));
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        assert_eq!(
            LatencyReport::from_histogram(&new_histogram()),
            LatencyReport::default()
        );
    }

    #[test]
    fn sub_microsecond_and_huge_values_saturate() {
        let mut histogram = new_histogram();
        record(&mut histogram, Duration::from_nanos(10));
        record(&mut histogram, Duration::from_secs(100_000));
        let report = LatencyReport::from_histogram(&histogram);
        assert_eq!(report.count, 2);
        assert!(report.max_us >= HIGHEST_MICROS);
    }
}
