//! The agent's HTTP endpoints, on a thread of their own: they read only what the tracing side
//! published, so no client, however slow or hostile, can hold tracing up. Each connection is
//! bounded in number, in how long its request may take to arrive and how long it may stay,
//! and in how much of a request is buffered; request bodies are never read.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::{metrics, Published};
use crate::{
    error::{Error, Result},
    report::{pprof, Report},
};

/// Connections served at once; more are closed as they come.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, keep-alive included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a request buffered (hyper's smallest allowed).
const MAX_REQUEST_BYTES: usize = 8192;

const INDEX: &str = "pooltrace agent\n\n\
/metrics            Prometheus / OpenMetrics text\n\
/debug/pprof/pool   outstanding and collected objects by call path (gzipped pprof)\n\
/report.json        one JSON report per traced process\n\
/healthz            liveness\n";

/// Serves `published` on `listener` from a thread of its own, for as long as the agent runs.
pub fn serve(listener: std::net::TcpListener, published: Arc<Mutex<Published>>) -> Result<()> {
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Serve { source })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime { source })?;
    std::thread::Builder::new()
        .name("pooltrace-http".into())
        .spawn(move || runtime.block_on(accept(listener, published)))
        .map_err(|source| Error::Serve { source })?;
    Ok(())
}

async fn accept(listener: std::net::TcpListener, published: Arc<Mutex<Published>>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            crate::status!("pooltrace agent: cannot serve: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors, say: wait rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let published = published.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let published = published.clone();
                async move { Ok::<_, Infallible>(respond(&request, &published)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(slot);
        });
    }
}

fn respond(request: &Request<Incoming>, published: &Mutex<Published>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics::encode(take(published).scrape()),
        ),
        "/debug/pprof/pool" => {
            let published = take(published);
            match pprof::encode_targets(&published.reports()) {
                Ok(profile) => reply(StatusCode::OK, "application/octet-stream", profile),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("cannot encode the profile: {e}\n"),
                ),
            }
        }
        "/report.json" => {
            let published = take(published);
            // Plain data always serializes.
            let json = serde_json::to_string_pretty(&published.reports()).unwrap_or_default();
            let json = json + "\n";
            reply(StatusCode::OK, "application/json", json)
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/" => reply(StatusCode::OK, "text/plain", INDEX),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// A copy of what is published, taken under the lock and rendered after it is released.
fn take(published: &Mutex<Published>) -> Published {
    published.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Published {
    fn reports(&self) -> Vec<&Report> {
        self.targets.values().map(|t| &t.report).collect()
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
