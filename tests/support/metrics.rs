//! Scraping a replica's `/metrics` in tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET /metrics` from `url` (`http://HOST:PORT/metrics`) with a plain HTTP/1.1 request: the
/// test must not trust a client library the replica might share. Returns the body.
pub fn scrape(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("not an http URL: {url}"));
    let (hostport, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let mut sock = TcpStream::connect(hostport).unwrap_or_else(|e| panic!("connect {hostport}: {e}"));
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    write!(sock, "GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").expect("send request");
    let mut response = String::new();
    sock.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP body in {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"),
        "Prometheus text format: {head}"
    );
    body.to_string()
}

/// The value of one series, e.g. `chainrep_client_requests_total{method="get",outcome="ok"}`;
/// 0 when absent would hide a renamed metric, so absence fails.
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("series {series}: {e}"))
}
