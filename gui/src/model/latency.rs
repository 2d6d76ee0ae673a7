//! The 5-minute rolling latency graph: at most 300 points (one per second), older ones drop.

use std::collections::VecDeque;

/// Points the graph keeps.
pub const POINTS: usize = 300;

/// The graph's window in seconds.
pub const WINDOW_SECS: f64 = 300.0;

/// Latency samples over the last five minutes.
#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    points: VecDeque<(f64, f64)>,
}

impl LatencyWindow {
    /// Adds a sample taken at `t` seconds (any monotonic origin). A sample less than a second
    /// after the previous one replaces it (status can arrive more often than once a second);
    /// samples older than five minutes drop off.
    pub fn push(&mut self, t: f64, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        if let Some(&(last, _)) = self.points.back()
            && t - last < 1.0
        {
            self.points.pop_back();
        }
        self.points.push_back((t, ms));
        while self.points.len() > POINTS {
            self.points.pop_front();
        }
        while self.points.front().is_some_and(|&(t0, _)| t - t0 > WINDOW_SECS) {
            self.points.pop_front();
        }
    }

    /// The values, oldest first.
    pub fn values(&self) -> Vec<f64> {
        self.points.iter().map(|&(_, v)| v).collect()
    }

    /// How many points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// No points yet.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// A percentile (0–100) of the window, nearest rank.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let mut v = self.values();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        Some(v[rank.min(v.len()) - 1])
    }

    /// The graph's caption: `p50 0.4 ms · p95 2.1 ms · 300 points`.
    pub fn caption(&self) -> String {
        match (self.percentile(50.0), self.percentile(95.0)) {
            (Some(p50), Some(p95)) => format!(
                "p50 {} · p95 {} · last 5 min",
                super::format::latency_ms(p50),
                super::format::latency_ms(p95)
            ),
            _ => "no latency measured yet".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_300_points_one_per_second() {
        let mut w = LatencyWindow::default();
        for i in 0..400 {
            w.push(f64::from(i), f64::from(i));
        }
        assert_eq!(w.len(), POINTS);
        assert_eq!(w.values()[0], 100.0);
        assert_eq!(*w.values().last().unwrap(), 399.0);
    }

    #[test]
    fn faster_samples_replace_the_last_and_old_ones_expire() {
        let mut w = LatencyWindow::default();
        w.push(0.0, 5.0);
        w.push(0.4, 6.0);
        assert_eq!(w.values(), [6.0]);
        w.push(1.5, 7.0);
        w.push(400.0, 8.0);
        assert_eq!(w.values(), [8.0], "a gap longer than five minutes leaves only the new point");
        w.push(401.0, f64::NAN);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn percentiles_and_caption() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.caption(), "no latency measured yet");
        for i in 1..=100 {
            w.push(f64::from(i), f64::from(i) / 10.0);
        }
        assert_eq!(w.percentile(50.0), Some(5.0));
        assert_eq!(w.percentile(95.0), Some(9.5));
        assert_eq!(w.caption(), "p50 5.0 ms · p95 9.5 ms · last 5 min");
    }
}
