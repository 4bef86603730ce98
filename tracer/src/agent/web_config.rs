//! The agent's `--web-config` file: the Prometheus exporter-toolkit's web configuration (YAML),
//! read and checked once, at start, into what `http` serves with: a rustls server
//! configuration, the basic-auth users (`auth`), and extra response headers. Every mistake
//! fails the start in one line that names the key. What pooltrace takes of the format, and
//! what it refuses, is in the README ("TLS and authentication").

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use hyper::header::{HeaderName, HeaderValue};
use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::{ring as provider, WebPkiSupportedAlgorithms},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        WebPkiClientVerifier,
    },
    version::{TLS12, TLS13},
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::{de::IgnoredAny, Deserialize};

use super::auth::BasicAuth;
use crate::error::{Error, Result, WebConfigMistake};

/// How the endpoints are served: plain HTTP to anyone without a file.
pub struct WebConfig {
    /// TLS, when `tls_server_config` asks for it.
    pub tls: Option<Arc<ServerConfig>>,
    /// Basic authentication, when `basic_auth_users` names anyone.
    pub auth: Option<Arc<BasicAuth>>,
    /// `http_server_config.headers`, added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What `--dry-run` and the start say of it.
    pub summary: Summary,
}

/// The settings in force, in words.
pub struct Summary {
    /// The TLS versions spoken, `None` without TLS.
    versions: Option<(Version, Version)>,
    client_auth: ClientAuth,
    users: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.versions {
            Some((min, max)) if min == max => write!(f, "TLS on ({} only)", min.name())?,
            Some((min, max)) => write!(f, "TLS on ({} to {})", min.name(), max.name())?,
            None => f.write_str("TLS off")?,
        }
        match self.client_auth {
            ClientAuth::NoClientCert => f.write_str(", no client certificates")?,
            other => write!(f, ", client certificates {other:?}")?,
        }
        match self.users {
            0 => f.write_str(", no basic auth"),
            1 => f.write_str(", basic auth for 1 user"),
            n => write!(f, ", basic auth for {n} users"),
        }
    }
}

impl WebConfig {
    /// No file: plain HTTP, no authentication.
    pub fn plain() -> Self {
        Self {
            tls: None,
            auth: None,
            headers: Vec::new(),
            summary: Summary {
                versions: None,
                client_auth: ClientAuth::NoClientCert,
                users: 0,
            },
        }
    }

    /// Reads `path` and every file it names; relative paths in it are taken from its
    /// directory, as the exporter-toolkit takes them.
    pub fn load(path: &Path) -> Result<Self> {
        let fail = |mistake| Error::WebConfig {
            path: path.to_owned(),
            mistake: Box::new(mistake),
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(WebConfigMistake::Read(e)))?;
        let file = parse(&text).map_err(fail)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        build(file, dir).map_err(fail)
    }

    /// Whether a client must prove who it is: a basic-auth password, or a certificate from
    /// the client CA (RequireAndVerifyClientCert; the other types let a client in without
    /// one, or with any).
    pub fn authenticates(&self) -> bool {
        self.auth.is_some() || self.summary.client_auth == ClientAuth::RequireAndVerifyClientCert
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self.tls {
            Some(_) => "https",
            None => "http",
        }
    }
}

/// The file as written. Every key of the exporter-toolkit's format is known, so that one
/// pooltrace does not act on is refused by name rather than ignored.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of web settings")]
struct File {
    tls_server_config: Option<TlsSection>,
    http_server_config: Option<HttpSection>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of TLS settings")]
struct TlsSection {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<IgnoredAny>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of HTTP settings")]
struct HttpSection {
    /// Accepted, and without effect: pooltrace serves HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The file, or where YAML says it is wrong. An empty file is no settings, as in the toolkit.
fn parse(text: &str) -> Result<File, WebConfigMistake> {
    match yaml_serde::from_str::<Option<File>>(text) {
        Ok(file) => Ok(file.unwrap_or_default()),
        Err(error) => {
            let message = error.to_string();
            Err(match error.location() {
                Some(at) => WebConfigMistake::Syntax {
                    line: at.line(),
                    column: at.column(),
                    message: message.replacen(
                        &format!(" at line {} column {}", at.line(), at.column()),
                        "",
                        1,
                    ),
                },
                None => WebConfigMistake::Unplaced { message },
            })
        }
    }
}

fn build(file: File, dir: &Path) -> Result<WebConfig, WebConfigMistake> {
    if file.rate_limit.is_some() {
        return Err(value(
            "rate_limit",
            "pooltrace does not rate-limit (it serves at most 32 connections at once); leave it \
             out",
        ));
    }
    let auth = match BasicAuth::new(file.basic_auth_users.unwrap_or_default()) {
        Ok(auth) => auth.map(Arc::new),
        Err(bad) => return Err(value(format!("basic_auth_users.{}", bad.user), bad.reason)),
    };
    let headers = headers(file.http_server_config.unwrap_or_default())?;
    let tls = file.tls_server_config.unwrap_or_default();
    if tls.client_allowed_sans.is_some() {
        return Err(value(
            "tls_server_config.client_allowed_sans",
            "pooltrace does not match client certificates' SANs; trust a CA of their own \
             (client_ca_file, client_auth_type: RequireAndVerifyClientCert) and leave it out",
        ));
    }
    let (tls, versions, client_auth) = match tls.is_enabled() {
        true => {
            let (config, versions, client_auth) = server_config(tls, dir)?;
            (Some(Arc::new(config)), Some(versions), client_auth)
        }
        false => (None, None, ClientAuth::NoClientCert),
    };
    let users = auth.as_ref().map_or(0, |auth| auth.users());
    Ok(WebConfig {
        tls,
        auth,
        headers,
        summary: Summary {
            versions,
            client_auth,
            users,
        },
    })
}

fn value(key: impl Into<String>, reason: impl Into<String>) -> WebConfigMistake {
    WebConfigMistake::Value {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The headers the exporter-toolkit lets be set, with the values it allows (any when none
/// are listed).
const HEADERS: [(&str, &[&str]); 5] = [
    ("Content-Security-Policy", &[]),
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
];

fn headers(http: HttpSection) -> Result<Vec<(HeaderName, HeaderValue)>, WebConfigMistake> {
    let mut headers = Vec::new();
    for (name, text) in http.headers.unwrap_or_default() {
        let key = format!("http_server_config.headers.{name}");
        let Some((_, allowed)) = HEADERS.iter().find(|(known, _)| *known == name) else {
            let names: Vec<&str> = HEADERS.iter().map(|(name, _)| *name).collect();
            return Err(value(
                key,
                format!(
                    "not a header that can be set; these can: {}",
                    names.join(", ")
                ),
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&text.as_str()) {
            return Err(value(
                key,
                format!("{text:?} is none of {}", allowed.join(", ")),
            ));
        }
        // Blank: unset, as the toolkit documents.
        if text.is_empty() {
            continue;
        }
        let header_value = HeaderValue::from_str(&text)
            .map_err(|_| value(&key, format!("{text:?} is not a header value")))?;
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| value(&key, "not a header name"))?;
        headers.push((header_name, header_value));
    }
    Ok(headers)
}

/// A TLS version the toolkit names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl Version {
    const ALL: [Version; 4] = [Self::Tls10, Self::Tls11, Self::Tls12, Self::Tls13];

    fn name(self) -> &'static str {
        match self {
            Self::Tls10 => "TLS10",
            Self::Tls11 => "TLS11",
            Self::Tls12 => "TLS12",
            Self::Tls13 => "TLS13",
        }
    }

    /// `min_version` or `max_version`, `default` when not given.
    fn parse(
        key: &'static str,
        text: Option<&str>,
        default: Self,
    ) -> Result<Self, WebConfigMistake> {
        let Some(text) = text else {
            return Ok(default);
        };
        let Some(version) = Self::ALL.into_iter().find(|v| v.name() == text) else {
            return Err(value(
                key,
                format!("{text:?} is none of TLS10, TLS11, TLS12, TLS13"),
            ));
        };
        if version < Self::Tls12 {
            return Err(value(
                key,
                format!("{text}: pooltrace's TLS (rustls) speaks TLS12 and TLS13 only"),
            ));
        }
        Ok(version)
    }
}

/// `client_auth_type`, by the toolkit's names (Go's `tls.ClientAuthType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(text: Option<&str>) -> Result<Self, WebConfigMistake> {
        Ok(match text.unwrap_or("") {
            "" | "NoClientCert" => Self::NoClientCert,
            "RequestClientCert" => Self::RequestClientCert,
            // The toolkit's older name, still accepted there.
            "RequireAnyClientCert" | "RequireClientCert" => Self::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => Self::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => Self::RequireAndVerifyClientCert,
            other => {
                return Err(value(
                    "tls_server_config.client_auth_type",
                    format!(
                        "{other:?} is none of NoClientCert, RequestClientCert, \
                         RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                    ),
                ))
            }
        })
    }
}

/// Text that is set: the toolkit takes an empty string for a key left out.
fn given<T: AsRef<std::ffi::OsStr>>(value: &Option<T>) -> Option<&T> {
    value.as_ref().filter(|v| !v.as_ref().is_empty())
}

impl TlsSection {
    /// TLS is on when any of its keys is set, as in the toolkit.
    fn is_enabled(&self) -> bool {
        given(&self.cert).is_some()
            || given(&self.key).is_some()
            || given(&self.client_ca).is_some()
            || given(&self.cert_file).is_some()
            || given(&self.key_file).is_some()
            || given(&self.client_ca_file).is_some()
            || given(&self.client_auth_type).is_some()
    }
}

/// PEM text given inline (`cert`) or in a file (`cert_file`).
struct Pem {
    /// The key it came from.
    key: &'static str,
    /// Its file, or `None` inline.
    file: Option<PathBuf>,
    bytes: Vec<u8>,
}

impl Pem {
    /// The inline text or the file's, whichever is given; both is a mistake.
    fn read(
        section: &str,
        (inline_key, inline): (&'static str, &Option<String>),
        (file_key, file): (&'static str, &Option<PathBuf>),
        dir: &Path,
    ) -> Result<Option<Self>, WebConfigMistake> {
        match (given(inline), given(file)) {
            (Some(_), Some(_)) => Err(value(
                format!("{section}.{file_key}"),
                format!("{file_key} and {inline_key} are both given; give one"),
            )),
            (Some(text), None) => Ok(Some(Self {
                key: inline_key,
                file: None,
                bytes: text.as_bytes().to_vec(),
            })),
            (None, Some(path)) => {
                let path = dir.join(path);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(Self {
                        key: file_key,
                        file: Some(path),
                        bytes,
                    })),
                    Err(source) => Err(WebConfigMistake::File {
                        key: format!("{section}.{file_key}"),
                        path,
                        source,
                    }),
                }
            }
            (None, None) => Ok(None),
        }
    }

    /// "/x/cert.pem" or "the inline PEM", for messages.
    fn origin(&self) -> String {
        match &self.file {
            Some(path) => path.display().to_string(),
            None => "the inline PEM".to_owned(),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, WebConfigMistake> {
        let certificates = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.mistake(format!("{} is not PEM ({e})", self.origin())))?;
        if certificates.is_empty() {
            return Err(self.mistake(format!("{} holds no PEM certificate", self.origin())));
        }
        Ok(certificates)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, WebConfigMistake> {
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|e| {
            let what = match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned()
                }
                e => format!("is not PEM ({e})"),
            };
            self.mistake(format!("{} {what}", self.origin()))
        })
    }

    fn mistake(&self, reason: String) -> WebConfigMistake {
        value(format!("tls_server_config.{}", self.key), reason)
    }
}

/// The rustls configuration `tls` asks for, the versions it speaks and how it asks for
/// client certificates.
fn server_config(
    tls: TlsSection,
    dir: &Path,
) -> Result<(ServerConfig, (Version, Version), ClientAuth), WebConfigMistake> {
    const SECTION: &str = "tls_server_config";
    let cert = Pem::read(
        SECTION,
        ("cert", &tls.cert),
        ("cert_file", &tls.cert_file),
        dir,
    )?
    .ok_or_else(|| {
        value(
            SECTION,
            "cert_file (or cert) is missing: TLS needs a certificate",
        )
    })?;
    let key = Pem::read(SECTION, ("key", &tls.key), ("key_file", &tls.key_file), dir)?.ok_or_else(
        || {
            value(
                SECTION,
                "key_file (or key) is missing: TLS needs the certificate's key",
            )
        },
    )?;
    let client_ca = Pem::read(
        SECTION,
        ("client_ca", &tls.client_ca),
        ("client_ca_file", &tls.client_ca_file),
        dir,
    )?;
    let chain = cert.certificates()?;
    let private_key = key.private_key()?;
    let client_auth = ClientAuth::parse(tls.client_auth_type.as_deref())?;

    let min = Version::parse(
        "tls_server_config.min_version",
        tls.min_version.as_deref(),
        Version::Tls12,
    )?;
    let max = Version::parse(
        "tls_server_config.max_version",
        tls.max_version.as_deref(),
        Version::Tls13,
    )?;
    if min > max {
        return Err(value(
            SECTION,
            format!(
                "min_version {} is above max_version {}",
                min.name(),
                max.name()
            ),
        ));
    }
    let versions: Vec<&'static SupportedProtocolVersion> =
        [(Version::Tls12, &TLS12), (Version::Tls13, &TLS13)]
            .into_iter()
            .filter(|(version, _)| (min..=max).contains(version))
            .map(|(_, supported)| supported)
            .collect();

    // rustls 0.23.48 deprecates ring's provider for its lack of post-quantum key exchange
    // (X25519MLKEM768 is aws-lc-rs's alone). ring is kept for a small build (aws-lc is a
    // large C one): key exchange is X25519, P-256 or P-384.
    #[allow(deprecated)]
    let mut crypto = provider::default_provider();
    if let Some(names) = &tls.cipher_suites {
        crypto.cipher_suites = cipher_suites(names)?;
    }
    if let Some(names) = &tls.curve_preferences {
        crypto.kx_groups = curves(names)?;
    }
    let crypto = Arc::new(crypto);
    let builder = ServerConfig::builder_with_provider(crypto.clone())
        .with_protocol_versions(&versions)
        .map_err(|source| WebConfigMistake::Tls {
            key: "tls_server_config.cipher_suites".into(),
            what: "no cipher suite is left for the versions allowed".into(),
            source,
        })?;
    let builder = match client_auth {
        ClientAuth::NoClientCert => {
            if let Some(ca) = &client_ca {
                return Err(value(
                    format!("{SECTION}.{}", ca.key),
                    "a client CA is given but client_auth_type is NoClientCert: set \
                     client_auth_type (RequireAndVerifyClientCert checks certificates against \
                     it)",
                ));
            }
            builder.with_no_client_auth()
        }
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => builder
            .with_client_cert_verifier(Arc::new(AnyClientCert {
                mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                algorithms: crypto.signature_verification_algorithms,
            })),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let Some(ca) = &client_ca else {
                return Err(value(
                    "tls_server_config.client_auth_type",
                    format!("{client_auth:?} needs client_ca_file (or client_ca) to check certificates against"),
                ));
            };
            let mut roots = RootCertStore::empty();
            for certificate in ca.certificates()? {
                roots
                    .add(certificate)
                    .map_err(|source| WebConfigMistake::Tls {
                        key: format!("tls_server_config.{}", ca.key),
                        what: format!(
                            "{} holds a certificate rustls cannot use as a CA",
                            ca.origin()
                        ),
                        source,
                    })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto.clone());
            let verifier = match client_auth {
                ClientAuth::VerifyClientCertIfGiven => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|e| {
                value(
                    format!("{SECTION}.{}", ca.key),
                    format!("cannot check client certificates against it: {e}"),
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder
            .with_single_cert(chain, private_key)
            .map_err(|source| match source {
                rustls::Error::InconsistentKeys(_) => key.mistake(format!(
                    "{} is not the key of the certificate in {}",
                    key.origin(),
                    cert.origin()
                )),
                source => WebConfigMistake::Tls {
                    key: format!("tls_server_config.{}", key.key),
                    what: format!(
                        "{} and the certificate in {} cannot be used",
                        key.origin(),
                        cert.origin()
                    ),
                    source,
                },
            })?;
    // prefer_server_cipher_suites, true by default in the toolkit.
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    Ok((config, (min, max), client_auth))
}

/// The TLS 1.2 suites `names` chooses, in its order, after every TLS 1.3 suite: as in Go,
/// `cipher_suites` leaves TLS 1.3's alone.
fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, WebConfigMistake> {
    let all = provider::ALL_CIPHER_SUITES;
    let offered: Vec<SupportedCipherSuite> = all
        .iter()
        .copied()
        .filter(|suite| suite.version() == &TLS12)
        .collect();
    let mut chosen: Vec<SupportedCipherSuite> = all
        .iter()
        .copied()
        .filter(|suite| suite.version() == &TLS13)
        .collect();
    for name in names {
        let Some(suite) = offered
            .iter()
            .find(|suite| suite.suite().as_str() == Some(name.as_str()))
        else {
            let known: Vec<&str> = offered.iter().filter_map(|s| s.suite().as_str()).collect();
            return Err(value(
                "tls_server_config.cipher_suites",
                format!(
                    "{name} is not a TLS 1.2 suite pooltrace offers (no CBC, no RSA key \
                     exchange); these are: {}",
                    known.join(", ")
                ),
            ));
        };
        chosen.push(*suite);
    }
    Ok(chosen)
}

/// The key exchange groups `curve_preferences` names, by Go's names, in its order.
fn curves(
    names: &[String],
) -> Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>, WebConfigMistake> {
    names
        .iter()
        .map(|name| match name.as_str() {
            "X25519" => Ok(provider::kx_group::X25519),
            "CurveP256" => Ok(provider::kx_group::SECP256R1),
            "CurveP384" => Ok(provider::kx_group::SECP384R1),
            "CurveP521" => Err(value(
                "tls_server_config.curve_preferences",
                "CurveP521 is not offered by pooltrace's TLS (rustls with ring); X25519, \
                 CurveP256 and CurveP384 are",
            )),
            other => Err(value(
                "tls_server_config.curve_preferences",
                format!("{other:?} is none of X25519, CurveP256, CurveP384, CurveP521"),
            )),
        })
        .collect()
}

/// RequestClientCert and RequireAnyClientCert: a certificate is asked for (required by the
/// second) but, as in Go, checked against no CA; the handshake's signature still proves the
/// client holds its key. The toolkit calls both insecure for authentication.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mistake(yaml: &str) -> String {
        match parse(yaml).and_then(|file| build(file, Path::new("/nowhere"))) {
            Ok(_) => panic!("{yaml:?} was taken"),
            Err(mistake) => mistake.to_string(),
        }
    }

    #[test]
    fn an_empty_file_or_one_of_comments_sets_nothing() {
        for yaml in ["", "\n", "# nothing yet\n", "---\n"] {
            let web = build(parse(yaml).unwrap(), Path::new("/")).unwrap();
            assert!(!web.authenticates() && web.tls.is_none(), "{yaml:?}");
            assert_eq!(
                web.summary.to_string(),
                "TLS off, no client certificates, no basic auth"
            );
        }
    }

    #[test]
    fn a_key_the_format_lacks_is_named_with_its_place() {
        assert_eq!(
            mistake("basic_auth_users: {}\nhttp_server_config:\n  http3: true\n"),
            "line 3, column 3: http_server_config: unknown field `http3`, expected `http2` or \
             `headers`"
        );
        assert_eq!(
            mistake("tls_server_config: yes\n"),
            "line 1, column 20: tls_server_config: invalid type: string \"yes\", expected a \
             mapping of TLS settings"
        );
    }

    #[test]
    fn keys_pooltrace_does_not_act_on_are_refused_by_name() {
        assert!(mistake("rate_limit:\n  burst: 1\n").starts_with("rate_limit: pooltrace does not"));
        assert!(mistake("tls_server_config:\n  client_allowed_sans: [a]\n")
            .starts_with("tls_server_config.client_allowed_sans: pooltrace does not"));
        assert_eq!(
            mistake("tls_server_config:\n  client_auth_type: Always\n  cert_file: /x\n"),
            "tls_server_config.cert_file: cannot read /x: No such file or directory"
        );
    }

    #[test]
    fn headers_are_the_toolkits_with_its_values() {
        assert_eq!(
            mistake("http_server_config:\n  headers:\n    X-Frame-Options: always\n"),
            "http_server_config.headers.X-Frame-Options: \"always\" is none of deny, sameorigin"
        );
        assert!(mistake("http_server_config:\n  headers:\n    Server: x\n")
            .starts_with("http_server_config.headers.Server: not a header that can be set"));
        let yaml =
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    \
                    Content-Security-Policy: \"\"\n";
        let web = build(parse(yaml).unwrap(), Path::new("/")).unwrap();
        assert_eq!(web.headers.len(), 1);
        assert_eq!(web.headers[0].0, "x-frame-options");
        assert_eq!(web.headers[0].1, "deny");
    }

    #[test]
    fn client_auth_types_are_the_toolkits() {
        assert_eq!(
            ClientAuth::parse(Some("RequireClientCert")).unwrap(),
            ClientAuth::RequireAnyClientCert
        );
        assert_eq!(ClientAuth::parse(None).unwrap(), ClientAuth::NoClientCert);
        assert!(ClientAuth::parse(Some("requireandverifyclientcert")).is_err());
    }
}
