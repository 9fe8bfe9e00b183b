//! Before a cold-start sample: wait until the worker has refilled its stems, so that the
//! sample is what a caller sees after a quiet spell (a stem waiting for it, none being
//! made beside it), not a cold start racing the refill the previous sample started.
//!
//! The worker says how many stems it is making in the `hearth_stems_making` gauge of
//! `/metrics`; a hearth that does not publish it (metrics off, an older build) is not
//! waited for.

use crate::client::Client;
use reqwest::Method;
use std::time::{Duration, Instant};

/// How often the gauge is read while stems are being made.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// The value of gauge `name` (no labels) in a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
}

/// Waits (at most `limit`) until no stem is being made. `true` once settled; `false`
/// when the hearth does not say (then the caller's own pause is all there is), or when
/// `limit` passed first.
pub async fn stems(client: &Client, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        let answer = client.request(Method::GET, "/metrics").send().await;
        let text = match answer {
            Ok(response) if response.status().is_success() => {
                response.text().await.unwrap_or_default()
            }
            _ => return false,
        };
        match gauge(&text, "hearth_stems_making") {
            None => return false,
            Some(making) if making <= 0.0 => return true,
            Some(_) if Instant::now() >= until => return false,
            Some(_) => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_by_exact_name() {
        let text = "# HELP hearth_stems_making Stems being made.\n\
                    # TYPE hearth_stems_making gauge\n\
                    hearth_stems_making 1\n\
                    hearth_stems_making_total 7\n\
                    hearth_stems_waiting 3\n";
        assert_eq!(gauge(text, "hearth_stems_making"), Some(1.0));
        assert_eq!(gauge(text, "hearth_stems_waiting"), Some(3.0));
        assert_eq!(gauge(text, "hearth_queue_depth"), None);
        assert_eq!(
            gauge("hearth_stems_making x\n", "hearth_stems_making"),
            None
        );
    }
}
