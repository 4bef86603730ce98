//! The agent's HTTP endpoints, on a thread of their own: they read only what the tracing side
//! published, so no client, however slow or hostile, can hold tracing up. Each connection is
//! bounded in number, in how long its TLS handshake and its request may take to arrive and
//! how long it may stay, and in how much of a request is buffered; request bodies are never
//! read. With a `--web-config` (`web_config`), connections are TLS and requests must pass
//! basic authentication (`auth`) before anything is answered.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;

use super::{metrics, web_config::WebConfig, Published};
use crate::{
    error::{Error, Result},
    report::{pprof, Report},
};

/// Connections served at once; more are closed as they come.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request head, and, first, to finish its TLS
/// handshake.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, handshake and keep-alive included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a request buffered (hyper's smallest allowed).
const MAX_REQUEST_BYTES: usize = 8192;
/// How long a refused connection is kept to let the client read why.
const LINGER: Duration = Duration::from_secs(1);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// The answer to plain HTTP on the TLS port, as Go's servers answer it, so that a scraper
/// set to `http` is told why rather than cut off.
const PLAIN_HTTP_TO_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\
Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

const INDEX: &str = "pooltrace agent\n\n\
/metrics            Prometheus / OpenMetrics text\n\
/debug/pprof/pool   outstanding and collected objects by call path (gzipped pprof)\n\
/report.json        one JSON report per traced process\n\
/healthz            liveness\n";

/// Serves `published` on `listener` as `web` says, from a thread of its own, for as long as
/// the agent runs.
pub fn serve(
    listener: std::net::TcpListener,
    published: Arc<Mutex<Published>>,
    web: WebConfig,
) -> Result<()> {
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Serve { source })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime { source })?;
    let site = Arc::new(Site { published, web });
    std::thread::Builder::new()
        .name("pooltrace-http".into())
        .spawn(move || runtime.block_on(accept(listener, site)))
        .map_err(|source| Error::Serve { source })?;
    Ok(())
}

/// What every connection answers from.
struct Site {
    published: Arc<Mutex<Published>>,
    web: WebConfig,
}

async fn accept(listener: std::net::TcpListener, site: Arc<Site>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            crate::status!("pooltrace agent: cannot serve: {e}");
            return;
        }
    };
    let tls = site.web.tls.clone().map(TlsAcceptor::from);
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
        let site = site.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, tls, site)).await;
            drop(slot);
        });
    }
}

/// One connection, TLS first when there is an acceptor: a client that never finishes its
/// handshake (or never starts it) is dropped after `HEADER_TIMEOUT`, as a request head would
/// be, and one that fails it is closed at once, after the alert that says why; others are
/// served meanwhile.
async fn connection(stream: TcpStream, tls: Option<TlsAcceptor>, site: Arc<Site>) {
    let Some(acceptor) = tls else {
        return http(TokioIo::new(stream), site).await;
    };
    let handshake = async {
        if !starts_tls(&stream).await {
            let mut stream = stream;
            let _ = stream.write_all(PLAIN_HTTP_TO_TLS).await;
            close(stream).await;
            return None;
        }
        match acceptor.accept(stream).into_fallible().await {
            Ok(stream) => Some(stream),
            Err((_, stream)) => {
                close(stream).await;
                None
            }
        }
    };
    if let Ok(Some(stream)) = tokio::time::timeout(HEADER_TIMEOUT, handshake).await {
        http(TokioIo::new(stream), site).await;
    }
}

/// Whether the client's first byte opens a TLS handshake (false too if it sent nothing).
async fn starts_tls(stream: &TcpStream) -> bool {
    let mut first = [0; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0] == TLS_HANDSHAKE)
}

/// Closes a refused connection so that the client reads what it was told (a TLS alert, or
/// the 400): the write side first, then what the client still sends is read and dropped, for
/// at most `LINGER`. Closing with its bytes unread would reset the connection instead, and
/// the client could lose the answer.
async fn close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = [0; 1024];
        let mut left = MAX_REQUEST_BYTES * 8;
        while let Ok(n @ 1..) = stream.read(&mut sink).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// HTTP/1.1 on `io`, plain or TLS.
async fn http<I>(io: I, site: Arc<Site>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let site = site.clone();
        async move { Ok::<_, Infallible>(site.answer(request).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .serve_connection(io, service)
        .await;
}

impl Site {
    /// The response to `request`: 401 unless it passes basic authentication (when there is
    /// any), then the endpoint's; every response carries the configured headers.
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let admitted = match &self.web.auth {
            Some(auth) => {
                let authorization = request.headers().get(AUTHORIZATION).cloned();
                auth.admits(authorization.as_ref()).await
            }
            None => true,
        };
        let mut response = match admitted {
            true => respond(&request, &self.published),
            false => {
                let mut response = reply(StatusCode::UNAUTHORIZED, "text/plain", "Unauthorized\n");
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                response
            }
        };
        for (name, value) in &self.web.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
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
