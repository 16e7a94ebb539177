//! An `https://` Prometheus address works without a process-wide rustls provider: the source
//! brings its own ring-based config (reqwest is built with `rustls-no-provider`, which would
//! otherwise panic). Its own binary, so no other test has installed a default provider.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use modelrollout_analysis::{AnalysisError, MetricsSource, PrometheusSource, Target};

/// A TLS address whose port refuses connections is unreachable, not a panic.
#[tokio::test]
async fn https_address_uses_the_crates_own_tls_config() {
    // Bound then released: nothing listens there.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let address = format!("https://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let target = Target {
        prometheus: address.clone(),
        rollout: "tls".to_owned(),
        namespace: "ns".to_owned(),
    };
    let source = PrometheusSource::new(Duration::from_secs(10));
    let result = tokio::time::timeout(Duration::from_secs(60), source.proxy_weights(&target))
        .await
        .expect("bounded");
    let err = result.expect_err("nothing listens");
    assert!(matches!(err, AnalysisError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&address) && text.contains("refused"), "{text}");
}
