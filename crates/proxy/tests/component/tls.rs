//! https upstreams: rustls with an extra CA file, HTTP/2 negotiated by ALPN.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use modelrollout_mockllm::MockConfig;
use serde_json::json;

use crate::support::*;

/// Starts an https upstream on 127.0.0.1 with a fresh self-signed certificate, answering every
/// request with a chat completion and recording the HTTP version it was asked with.
async fn tls_upstream() -> (String, String, Arc<Mutex<Vec<http::Version>>>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let ca_pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&versions);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    seen.lock().unwrap().push(request.version());
                    let body = json!({"object": "chat.completion", "model": "tls-model",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "over tls"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
                    let response = Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                        .unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("https://127.0.0.1:{}/v1", addr.port()), ca_pem, versions)
}

/// With --upstream-ca-file trusting the upstream's certificate the request succeeds over
/// HTTP/2; without it the certificate is refused and the client gets a 502.
#[tokio::test]
async fn https_upstream_with_extra_ca_speaks_http2() {
    let (endpoint, ca_pem, versions) = tls_upstream().await;
    let stable = mock(MockConfig::default()).await;
    let dir = chat_dir(&stable.base_url(), &endpoint, 100);
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), ca_pem).unwrap();
    let ca_path = ca.path().to_owned();
    let proxy = start_proxy(&dir, |c| c.upstream_ca_file = Some(ca_path)).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.track(), "canary");
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "over tls");
    assert_eq!(*versions.lock().unwrap(), [http::Version::HTTP_2]);
    proxy.shutdown().await;

    let proxy = start_proxy(&dir, |c| c.forward.max_retries = 0).await;
    let answer = post(&proxy.base_url(), "/chat/completions", &chat("chat-default"), &[]).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "upstream_unreachable");
    assert_eq!(versions.lock().unwrap().len(), 1, "the untrusted upstream got no request");
    proxy.shutdown().await;
}
