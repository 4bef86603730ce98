//! `top --agent`: the reports a running agent serves at `/report.json`, fetched over HTTP or
//! HTTPS with what a Prometheus scraper of that agent is given (a CA, a client certificate,
//! basic-auth credentials). One connection per fetch: a fetch a second is nothing to an
//! agent, and nothing is held open between them.

use std::{fs, path::Path, sync::Arc, time::Duration};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{
    header::{AUTHORIZATION, HOST},
    Request, StatusCode, Uri,
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{
    cli::AgentCredentials,
    error::{Error, Result},
    report::Report,
};

/// How long a fetch may take, connection and all, before the agent counts as unreachable.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A running agent, as `--agent` and the credentials options name it.
pub(crate) struct Agent {
    /// As given, for messages.
    url: String,
    host: String,
    port: u16,
    /// `/report.json` under the URL's path.
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    authorization: Option<String>,
}

impl Agent {
    /// Checks the URL and reads the credentials: every mistake is found before the screen
    /// is taken.
    pub(crate) fn new(url: &str, credentials: &AgentCredentials) -> Result<Self> {
        let wrong = |reason: &str| Error::AgentUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| wrong("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(wrong("give http:// or https://")),
        };
        let host = uri.host().ok_or_else(|| wrong("it names no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = format!("{}/report.json", uri.path().trim_end_matches('/'));
        let tls = match https {
            true => Some(tls(url, &host, credentials)?),
            false if credentials.agent_ca.is_some() || credentials.agent_cert.is_some() => {
                return Err(wrong(
                    "--agent-ca and --agent-cert need an https:// address",
                ));
            }
            false => None,
        };
        Ok(Self {
            url: url.to_owned(),
            host,
            port,
            path,
            tls,
            authorization: basic_auth(credentials)?,
        })
    }

    /// The reports the agent serves now, one per traced process.
    pub(crate) async fn reports(&self) -> Result<Vec<Report>> {
        let body = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .map_err(|_| self.unreachable(std::io::ErrorKind::TimedOut.into()))??;
        serde_json::from_slice(&body).map_err(|source| Error::AgentReports {
            url: self.url.clone(),
            source,
        })
    }

    async fn fetch(&self) -> Result<Bytes> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.unreachable(e))?;
        match &self.tls {
            Some((connector, name)) => {
                let stream = (connector.connect(name.clone(), tcp).await)
                    .map_err(|e| self.unreachable(e))?;
                self.exchange(TokioIo::new(stream)).await
            }
            None => self.exchange(TokioIo::new(tcp)).await,
        }
    }

    async fn exchange<T>(&self, io: TokioIo<T>) -> Result<Bytes>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let http = |source| Error::AgentHttp {
            url: self.url.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(http)?;
        let connection = tokio::spawn(connection);
        let mut request = Request::get(self.path.as_str()).header(HOST, self.host.as_str());
        if let Some(credentials) = &self.authorization {
            request = request.header(AUTHORIZATION, credentials.as_str());
        }
        let request = (request.body(Empty::<Bytes>::new()))
            .map_err(|_| Error::Internal("an HTTP request of fixed parts"))?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(http)?;
        connection.abort();
        if status != StatusCode::OK {
            return Err(Error::AgentRefused {
                url: self.url.clone(),
                status: status.as_u16(),
                hint: match status {
                    StatusCode::UNAUTHORIZED => {
                        ": give one of its basic_auth_users with --agent-user and --agent-password-file"
                    }
                    StatusCode::NOT_FOUND => ": is it a pooltrace agent?",
                    _ => "",
                },
            });
        }
        Ok(body.to_bytes())
    }

    fn unreachable(&self, source: std::io::Error) -> Error {
        Error::AgentUnreachable {
            url: self.url.clone(),
            source,
        }
    }
}

/// The TLS client: the agent's certificate checked against `--agent-ca`, and
/// `--agent-cert` shown when given.
fn tls(
    url: &str,
    host: &str,
    credentials: &AgentCredentials,
) -> Result<(TlsConnector, ServerName<'static>)> {
    let wrong = |reason: String| Error::AgentUrl {
        url: url.to_owned(),
        reason,
    };
    let Some(ca) = &credentials.agent_ca else {
        return Err(wrong(
            "https:// needs --agent-ca, the CA the agent's certificate is checked against".into(),
        ));
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates("--agent-ca", ca)? {
        roots
            .add(certificate)
            .map_err(|e| credential_error("--agent-ca", ca, e))?;
    }
    // ring, as the agent's own TLS (see agent/web_config.rs on its deprecation).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| credential_error("--agent-ca", ca, e))?
        .with_root_certificates(roots);
    let config = match (&credentials.agent_cert, &credentials.agent_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("--agent-cert", cert)?;
            let read = fs::read(key).map_err(|e| credential_error("--agent-key", key, e))?;
            let key_der = PrivateKeyDer::from_pem_slice(&read)
                .map_err(|e| credential_error("--agent-key", key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| credential_error("--agent-cert", cert, e))?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| wrong(format!("{host} is not a name a certificate can carry")))?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}

fn certificates(option: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = fs::read(path).map_err(|e| credential_error(option, path, e))?;
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| credential_error(option, path, e))?;
    match certificates.is_empty() {
        true => Err(credential_error(
            option,
            path,
            "it holds no PEM certificate",
        )),
        false => Ok(certificates),
    }
}

/// The Authorization header of `--agent-user` and the first line of its password file.
fn basic_auth(credentials: &AgentCredentials) -> Result<Option<String>> {
    let (Some(user), Some(file)) = (&credentials.agent_user, &credentials.agent_password_file)
    else {
        return Ok(None);
    };
    let text =
        fs::read_to_string(file).map_err(|e| credential_error("--agent-password-file", file, e))?;
    let password = text.lines().next().unwrap_or_default();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Ok(Some(format!("Basic {token}")))
}

fn credential_error(option: &'static str, path: &Path, reason: impl ToString) -> Error {
    Error::AgentCredentials {
        option,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}
