//! `pooltrace agent --web-config`, the Prometheus exporter-toolkit's web configuration: Debian's
//! Prometheus scrapes the agent over HTTPS with basic auth; a wrong password, plain HTTP, a
//! client certificate from another CA, and clients that never start their handshake are
//! refused while good clients go on being served; a bad file fails the start in one line; and
//! a non-loopback `--listen` without one is warned about once.
//!
//! Every certificate is made here, with rcgen: a CA, a server certificate for 127.0.0.1 and a
//! client certificate from that CA, and a client certificate from a CA of its own. The agent
//! follows an executable name nothing runs, so it traces nothing and serves its own series.

use std::{
    io::{self, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use pooltrace_harness::metric_sample;
use pooltrace_tests::{
    assert_one_line_error, free_port, percent_encode, real_program, run_pooltrace, top_command,
    Agent, Scratch, Tmux, Value,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
};

/// The password Prometheus and the good clients use, and the bcrypt hash the agent holds.
const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

/// A scratch directory `dir_name` holding `ca.pem`; `server.pem` and `server.key` (127.0.0.1,
/// from that CA); `client.pem` and `client.key` (from that CA); `stranger.pem` and
/// `stranger.key` (a client certificate from another CA, whose own certificate is written
/// nowhere).
fn certified(dir_name: &str) -> Scratch {
    let dir = Scratch::new(dir_name);
    let (ca, ca_pem) = new_ca("pooltrace test CA");
    dir.write("ca.pem", &ca_pem);
    let (other_ca, _) = new_ca("another CA");
    for (name, issuer, usage, sans) in [
        (
            "server",
            &ca,
            ExtendedKeyUsagePurpose::ServerAuth,
            vec!["127.0.0.1".to_owned()],
        ),
        ("client", &ca, ExtendedKeyUsagePurpose::ClientAuth, vec![]),
        (
            "stranger",
            &other_ca,
            ExtendedKeyUsagePurpose::ClientAuth,
            vec![],
        ),
    ] {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let certificate = params.signed_by(&key, issuer).expect("signed");
        dir.write(&format!("{name}.pem"), &certificate.pem());
        dir.write(&format!("{name}.key"), &key.serialize_pem());
    }
    dir
}

/// A self-signed CA named `name`, and its certificate's PEM.
fn new_ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let certificate = params.self_signed(&key).expect("self-signed");
    (Issuer::new(params, key), certificate.pem())
}

/// A web config with TLS from `certified`, `extra` lines under `tls_server_config`,
/// and basic auth for `USER` when `with_users`.
fn web_config(dir: &Scratch, extra: &str, with_users: bool) -> String {
    let mut yaml =
        format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{extra}");
    if with_users {
        // The least cost bcrypt allows keeps the test fast; the agent takes any.
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        yaml += &format!("basic_auth_users:\n  {USER}: {hash}\n");
    }
    dir.write("web.yml", &yaml);
    dir.path("web.yml")
}

/// An agent started with the web config `config`, run to its end (one that fails to start).
fn agent_with_web_config(config: &str) -> std::process::Output {
    run_pooltrace(&[
        "agent",
        "--exe",
        "x",
        "--pool",
        "sync",
        "--web-config",
        config,
    ])
}

/// An agent on loopback serving with `web_config(dir, extra, with_users)`.
fn tls_agent(dir: &Scratch, extra: &str, with_users: bool) -> Agent {
    let config = web_config(dir, extra, with_users);
    agent_on("127.0.0.1", &["--web-config", &config])
}

/// An agent that traces nothing, listening on a free port of `listen_ip`, with `args`.
fn agent_on(listen_ip: &str, args: &[&str]) -> Agent {
    let nothing = ["--exe", "pooltrace-tls-nothing", "--pool", "sync"];
    Agent::start_on(&[], listen_ip, &[&nothing[..], args].concat())
}

/// A TLS client trusting `ca.pem`, presenting the certificate `name`.pem if given.
fn tls_client(dir: &Scratch, certificate: Option<&str>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(dir.path("ca.pem")).expect("ca.pem");
    roots.add(ca).expect("a CA");
    let builder = ClientConfig::builder().with_root_certificates(roots);
    Arc::new(match certificate {
        Some(name) => {
            let chain = vec![
                CertificateDer::from_pem_file(dir.path(&format!("{name}.pem"))).expect("cert"),
            ];
            let key = PrivateKeyDer::from_pem_file(dir.path(&format!("{name}.key"))).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    })
}

/// An HTTP response: the status, the headers (names in lower case), the body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTPS GET of `path` (HTTP/1.0: the agent closes the connection after it), with basic
/// auth when `login` is given; the response, or what failed (the TLS handshake, say).
fn https_get(
    addr: &str,
    path: &str,
    client: &Arc<ClientConfig>,
    login: Option<(&str, &str)>,
) -> io::Result<Reply> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP");
    let connection = ClientConnection::new(client.clone(), name).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(connection, tcp);
    let authorization = login.map_or(String::new(), |(user, password)| {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Authorization: Basic {encoded}\r\n")
    });
    write!(
        tls,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{authorization}\r\n"
    )?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)?;
    let text = String::from_utf8(response).map_err(io::Error::other)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let mut lines = head.lines();
    let status = (lines.next().and_then(|l| l.split_whitespace().nth(1)))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status: {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// A good client (basic auth, and `certificate` if given) gets the agent's own series.
fn assert_served(agent: &Agent, client: &Arc<ClientConfig>, login: Option<(&str, &str)>) {
    let reply = https_get(&agent.addr, "/metrics", client, login)
        .unwrap_or_else(|e| panic!("a good client was refused: {e}"));
    assert_eq!(reply.status, 200, "{reply:?}");
    // The agent's own series: it traces nothing.
    assert_eq!(
        metric_sample(&reply.body, "pooltrace_targets_attached", &[]),
        Some(0.0),
        "{}",
        reply.body
    );
}

/// Debian's Prometheus, scraping `targets` over HTTPS every second as `jobs` say.
struct Prometheus {
    child: Child,
    addr: String,
}

impl Prometheus {
    /// `jobs`: each job's name and password for `USER`, all scraping `target`.
    fn start(dir: &Scratch, target: &str, jobs: &[(&str, &str)]) -> Self {
        let mut config =
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n".to_owned();
        for (job, password) in jobs {
            config += &format!(
                "  - job_name: {job}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n    \
                 basic_auth:\n      username: {USER}\n      password: '{password}'\n    \
                 static_configs:\n      - targets: ['{target}']\n",
                ca = dir.path("ca.pem"),
            );
        }
        let config = dir.write("prometheus.yml", &config);
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(real_program("POOLTRACE_PROMETHEUS"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path("tsdb")))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(&prometheus.addr).is_err() {
            assert!(Instant::now() < deadline, "prometheus did not listen");
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    fn api(&self, path: &str) -> Value {
        let (status, body) = pooltrace_harness::http_get(&self.addr, path, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let json: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(status, 200, "{path}: {json}");
        json
    }

    /// The scrape target of `job`, once it was scraped (its health no longer "unknown").
    fn scraped_target(&self, job: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let targets = self.api("/api/v1/targets?state=active");
            let target = targets["data"]["activeTargets"]
                .as_array()
                .and_then(|all| all.iter().find(|t| t["labels"]["job"] == job))
                .cloned();
            if let Some(target) = target.filter(|t| t["health"] != "unknown") {
                return target;
            }
            assert!(Instant::now() < deadline, "{job} never scraped: {targets}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The value of the one series `promql` selects.
    fn value(&self, promql: &str) -> f64 {
        let json = self.api(&format!("/api/v1/query?query={}", percent_encode(promql)));
        let result = json["data"]["result"].as_array().expect("a vector");
        assert_eq!(result.len(), 1, "{promql}: {json}");
        result[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{promql}: {json}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_agent_over_https_with_basic_auth_and_a_wrong_password_is_down() {
    let dir = certified("tls-prometheus");
    let agent = tls_agent(&dir, "", true);
    let prometheus = Prometheus::start(
        &dir,
        &agent.addr,
        &[("pooltrace", PASSWORD), ("wrong-password", "guess")],
    );

    let good = prometheus.scraped_target("pooltrace");
    assert_eq!(good["health"], "up", "{good}");
    assert_eq!(good["lastError"], "", "{good}");
    assert_eq!(
        good["scrapeUrl"],
        format!("https://{}/metrics", agent.addr).as_str()
    );
    assert_eq!(prometheus.value("up{job=\"pooltrace\"}"), 1.0);
    // A pooltrace series, as the agent exported it.
    assert_eq!(
        prometheus.value("pooltrace_targets_attached{job=\"pooltrace\"}"),
        0.0
    );

    let refused = prometheus.scraped_target("wrong-password");
    assert_eq!(refused["health"], "down", "{refused}");
    assert_eq!(
        refused["lastError"], "server returned HTTP status 401 Unauthorized",
        "{refused}"
    );
}

#[test]
fn a_wrong_password_gets_401_with_www_authenticate_basic_and_the_next_client_is_served() {
    let dir = certified("tls-password");
    let agent = tls_agent(&dir, "", true);
    let client = tls_client(&dir, None);
    for login in [
        Some((USER, "guess")),
        Some(("nobody", PASSWORD)),
        Some((USER, "")),
        None,
    ] {
        let reply = https_get(&agent.addr, "/metrics", &client, login).expect("an answer");
        assert_eq!(reply.status, 401, "{login:?}: {reply:?}");
        assert_eq!(reply.header("www-authenticate"), Some("Basic"), "{login:?}");
        assert_eq!(reply.body, "Unauthorized\n", "{login:?}");
        assert_served(&agent, &client, Some((USER, PASSWORD)));
    }
    // Every endpoint is behind the password, /healthz too.
    let reply = https_get(&agent.addr, "/healthz", &client, None).expect("an answer");
    assert_eq!(reply.status, 401);
    let reply = https_get(&agent.addr, "/healthz", &client, Some((USER, PASSWORD))).unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
}

#[test]
fn plain_http_on_the_tls_port_gets_400_and_the_next_client_is_served() {
    let dir = certified("tls-plain");
    let agent = tls_agent(&dir, "", true);
    let client = tls_client(&dir, None);
    for _ in 0..2 {
        let (status, body) =
            pooltrace_harness::http_get(&agent.addr, "/metrics", Duration::from_secs(30))
                .expect("an answer");
        assert_eq!(
            (status, String::from_utf8_lossy(&body).as_ref()),
            (400, "Client sent an HTTP request to an HTTPS server.\n")
        );
        assert_served(&agent, &client, Some((USER, PASSWORD)));
    }
}

#[test]
fn require_and_verify_client_cert_refuses_another_cas_certificate_and_none_and_serves_on() {
    let dir = certified("tls-client-cert");
    let extra = "  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n";
    let agent = tls_agent(&dir, extra, false);
    let good = tls_client(&dir, Some("client"));
    for (certificate, alert) in [
        (Some("stranger"), "received fatal alert: UnknownCA"),
        (None, "received fatal alert: CertificateRequired"),
    ] {
        let refused = https_get(
            &agent.addr,
            "/metrics",
            &tls_client(&dir, certificate),
            None,
        )
        .expect_err("served without a certificate from the client CA");
        assert_eq!(refused.to_string(), alert, "{certificate:?}");
        assert_served(&agent, &good, None);
    }
}

#[test]
fn clients_that_never_start_their_handshake_are_dropped_after_5s_and_others_are_served_meanwhile() {
    let dir = certified("tls-idle");
    let agent = tls_agent(&dir, "", true);
    let client = tls_client(&dir, None);
    let login = Some((USER, PASSWORD));
    // 31 of the 32 connections the agent serves at once say nothing: the last is served.
    let connect = || {
        (
            TcpStream::connect(&agent.addr).expect("connect"),
            Instant::now(),
        )
    };
    let mut idle: Vec<(TcpStream, Instant)> = (0..31).map(|_| connect()).collect();
    assert_served(&agent, &client, login);
    // The 32nd idle one fills the last slot: a client is turned away.
    idle.push(connect());
    std::thread::sleep(Duration::from_millis(500));
    let turned_away = https_get(&agent.addr, "/metrics", &client, login);
    assert!(turned_away.is_err(), "{turned_away:?}");
    // Each idle connection is closed 5 s (HEADER_TIMEOUT) after it opened, freeing its slot.
    for (mut stream, opened) in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut byte = [0; 1];
        let read = stream.read(&mut byte);
        let after = opened.elapsed();
        assert!(matches!(read, Ok(0)), "{read:?}");
        assert!(
            (Duration::from_millis(4500)..Duration::from_secs(10)).contains(&after),
            "closed after {after:?}"
        );
    }
    assert_served(&agent, &client, login);
}

#[test]
fn an_unknown_key_fails_the_start_in_one_line_naming_the_file_and_the_key() {
    let dir = certified("tls-unknown-key");
    let config = web_config(&dir, "  client_ca_fle: ca.pem\n", true);
    let output = agent_with_web_config(&config);
    assert_one_line_error(
        &output,
        &format!(
            "pooltrace: error: --web-config {config}: line 4, column 3: tls_server_config: \
             unknown field `client_ca_fle`, expected one of `cert`, `key`, `client_ca`, \
             `cert_file`, `key_file`, `client_auth_type`, `client_ca_file`, \
             `client_allowed_sans`, `min_version`, `max_version`, `cipher_suites`, \
             `prefer_server_cipher_suites`, `curve_preferences`"
        ),
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn a_missing_certificate_or_a_key_not_its_own_fails_the_start_in_one_line_naming_the_key() {
    let dir = certified("tls-bad-files");
    let config = dir.write(
        "missing.yml",
        "tls_server_config:\n  cert_file: gone.pem\n  key_file: server.key\n",
    );
    let config = config.to_str().expect("a UTF-8 path");
    let output = agent_with_web_config(config);
    assert_one_line_error(
        &output,
        &format!(
            "pooltrace: error: --web-config {config}: tls_server_config.cert_file: cannot read \
             {}: No such file or directory",
            dir.path("gone.pem")
        ),
    );
    assert_eq!(output.status.code(), Some(1));

    let config = dir.write(
        "mismatch.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: client.key\n",
    );
    let config = config.to_str().expect("a UTF-8 path");
    let output = agent_with_web_config(config);
    assert_one_line_error(
        &output,
        &format!(
            "pooltrace: error: --web-config {config}: tls_server_config.key_file: {} is not the \
             key of the certificate in {}",
            dir.path("client.key"),
            dir.path("server.pem")
        ),
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn a_non_loopback_listen_warns_once_without_web_config_and_not_with_tls_and_basic_auth() {
    let warning = |said: &[String]| -> Vec<String> {
        said.iter()
            .filter(|l| l.starts_with("pooltrace agent: warning: "))
            .cloned()
            .collect()
    };
    let plain = agent_on("0.0.0.0", &[]);
    let port = plain.addr.rsplit(':').next().expect("a port").to_owned();
    // It serves, over plain HTTP, for as long as it runs.
    let (status, _) = pooltrace_harness::http_get(&plain.addr, "/healthz", Duration::from_secs(30))
        .expect("an answer");
    assert_eq!(status, 200);
    assert_eq!(
        warning(&plain.stop()),
        [format!(
            "pooltrace agent: warning: 0.0.0.0:{port} is not loopback and there is no \
             --web-config: anyone who reaches it reads the endpoints, unencrypted and \
             unauthenticated"
        )]
    );

    let dir = certified("tls-no-warning");
    let config = web_config(&dir, "", true);
    let protected = agent_on("0.0.0.0", &["--web-config", &config]);
    assert_served(&protected, &tls_client(&dir, None), Some((USER, PASSWORD)));
    assert_eq!(warning(&protected.stop()), Vec::<String>::new());
}

#[test]
fn top_reads_the_agent_over_https_with_its_ca_a_client_certificate_and_basic_auth() {
    let dir = certified("tls-top");
    let extra = "  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n";
    let agent = tls_agent(&dir, extra, true);
    dir.write("password", &format!("{PASSWORD}\n"));
    dir.write("wrong", "not it\n");
    let url = format!("https://{}", agent.addr);
    let credentials = [
        "--agent",
        &url,
        "--agent-ca",
        "ca.pem",
        "--agent-cert",
        "client.pem",
        "--agent-key",
        "client.key",
        "--agent-user",
        USER,
        "--agent-password-file",
    ];
    let tmux = Tmux::start("tls", dir.0.clone(), 160, 30);
    // A wrong password fails in one line, before the screen is taken.
    tmux.type_line(&top_command(&[&credentials[..], &["wrong"]].concat()));
    let refused = format!("pooltrace: error: the agent at {url} answered 401: give one of its");
    tmux.until("refused", Duration::from_secs(10), |s| {
        s.iter().any(|l| l.starts_with(&refused)) && s.iter().any(|l| l == "top exited 1")
    });
    // The right one shows the view: this agent traces nothing.
    tmux.type_line(&top_command(&[&credentials[..], &["password"]].concat()));
    tmux.until("the view", Duration::from_secs(10), |s| {
        s[0] == format!("the agent at {url} traces no process yet")
    });
    tmux.quit_top();
}

#[test]
fn top_refuses_an_agent_whose_certificate_its_ca_did_not_sign_in_one_line() {
    let dir = certified("tls-top-ca");
    let (_, other_ca) = new_ca("another CA");
    dir.write("other-ca.pem", &other_ca);
    let agent = tls_agent(&dir, "", false);
    let url = format!("https://{}", agent.addr);
    let tmux = Tmux::start("tls-ca", dir.0.clone(), 220, 20);
    tmux.type_line(&top_command(&[
        "--agent",
        &url,
        "--agent-ca",
        "other-ca.pem",
    ]));
    let refused = format!("pooltrace: error: cannot reach the agent at {url}: invalid peer certificate: UnknownIssuer");
    let screen = tmux.until("refused", Duration::from_secs(10), |s| {
        s.iter().any(|l| l == "top exited 1")
    });
    assert!(
        screen.iter().any(|l| l == &refused),
        "{}",
        screen.join("\n")
    );
    // One line: the command line, the error, the status.
    let said: Vec<&String> = screen
        .iter()
        .filter(|l| l.starts_with("pooltrace:"))
        .collect();
    assert_eq!(said, [&refused]);
}
