//! The line `hearth up` prints on stdout once it serves, which scripts, the bench and
//! the test harness wait for: written and read here only.

const LISTENING_PREFIX: &str = "hearth listening on ";

/// The line announcing that hearth serves at `url`.
pub fn listening_line(url: &str) -> String {
    format!("{LISTENING_PREFIX}{url}")
}

/// The URL of a [`listening_line`], or `None` for any other line.
pub fn listening_url(line: &str) -> Option<&str> {
    line.strip_prefix(LISTENING_PREFIX).map(str::trim)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_announced_url_reads_back() {
        let line = super::listening_line("http://127.0.0.1:8080");
        assert_eq!(super::listening_url(&line), Some("http://127.0.0.1:8080"));
        assert_eq!(super::listening_url("hearth starting"), None);
    }
}
