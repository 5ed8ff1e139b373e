//! A real SMTP server for notification tests: `tests/support/smtp_sink.py` (aiosmtpd), one per
//! test, run with the Python that `.ci/test` exports as `ASSETGC_TEST_SMTP_PYTHON`.
//!
//! TLS uses a certificate authority made once per test process, with one server certificate for
//! `localhost` and `127.0.0.1`. The product trusts it through `SSL_CERT_FILE` (lettre loads the
//! system roots with rustls-native-certs, which reads `SSL_CERT_FILE` afresh each time it builds
//! TLS parameters, and then uses that file *instead of* the system roots):
//!
//! - a spawned `assetgc` gets `.env("SSL_CERT_FILE", sink.ca_pem_path())`;
//! - a library test calling the product in-process calls [`trust_test_ca`] first.
//!
//! ```ignore
//! let Some(sink) = SmtpSink::start(SinkOptions { tls: Tls::StartTls, auth: Some(("u", "p")) })
//! else { return };
//! // [notify] email = { smtp_url = "<sink.smtp_url(Some("u"), Some("p"))>", … }
//! let mails = sink.messages(1);
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::require_service;

/// How the sink secures its connections.
// The names are the protocols' own (STARTTLS), not a repetition of the enum's.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain SMTP; for `smtp://…?tls=none`.
    None,
    /// STARTTLS offered and required before mail; for `smtp://`.
    StartTls,
    /// TLS from the first byte; for `smtps://`.
    Smtps,
    /// STARTTLS with a self-signed certificate the test CA did not sign: what a client must
    /// refuse.
    StartTlsUntrusted,
}

#[derive(Debug, Clone, Copy)]
pub struct SinkOptions {
    pub tls: Tls,
    /// AUTH PLAIN/LOGIN required with this user and password.
    pub auth: Option<(&'static str, &'static str)>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            tls: Tls::StartTls,
            auth: None,
        }
    }
}

/// The test CA and the sink's certificate, written once per test process.
struct TestPki {
    ca_pem: PathBuf,
    cert_pem: PathBuf,
    key_pem: PathBuf,
    stranger_cert_pem: PathBuf,
    stranger_key_pem: PathBuf,
}

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        // Under target/, by process id: statics are never dropped, so a TempDir would be left
        // in /tmp, and test binaries running at once must not overwrite each other's CA.
        let dir = {
            let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
            remove_stale_pki(tmp);
            tmp.join(format!("smtp-pki-{}", std::process::id()))
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test PKI folder");

        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "assetgc test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("server key");
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .expect("sign the server cert");

        let stranger = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("a self-signed cert");

        let pki = TestPki {
            ca_pem: dir.join("ca.pem"),
            cert_pem: dir.join("server.pem"),
            key_pem: dir.join("server.key"),
            stranger_cert_pem: dir.join("stranger.pem"),
            stranger_key_pem: dir.join("stranger.key"),
        };
        std::fs::write(&pki.stranger_cert_pem, stranger.cert.pem()).expect("write stranger.pem");
        std::fs::write(&pki.stranger_key_pem, stranger.signing_key.serialize_pem())
            .expect("write stranger.key");
        std::fs::write(&pki.ca_pem, ca_cert.pem()).expect("write ca.pem");
        std::fs::write(&pki.cert_pem, leaf_cert.pem()).expect("write server.pem");
        std::fs::write(&pki.key_pem, leaf_key.serialize_pem()).expect("write server.key");
        pki
    })
}

/// The folders of test processes that are gone (Linux only: elsewhere a live process cannot be
/// told from a dead one this way, and the folders are merely left).
fn remove_stale_pki(tmp: &Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("smtp-pki-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The PEM file of the CA that signed every sink's certificate in this process: what a spawned
/// `assetgc` gets as `SSL_CERT_FILE`.
pub fn test_ca_pem() -> &'static Path {
    &pki().ca_pem
}

/// Makes this process trust the test CA (and nothing else) for TLS, by setting `SSL_CERT_FILE`
/// once. Call it at the start of a test, before anything in the process opens a TLS connection.
pub fn trust_test_ca() {
    static TRUSTED: OnceLock<()> = OnceLock::new();
    TRUSTED.get_or_init(|| {
        let ca = test_ca_pem();
        // SAFETY: set once (the OnceLock holds back every other caller until it is done), and
        // everything in the test process reads the environment through std (rustls-native-certs
        // uses `env::var_os`), which takes the same lock as `set_var`.
        unsafe { std::env::set_var("SSL_CERT_FILE", ca) };
    });
}

/// A free port on 127.0.0.1 at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running sink; killed when dropped.
pub struct SmtpSink {
    child: Child,
    port: u16,
    opts: SinkOptions,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts a sink on a free port and waits until it listens; `None` (after saying so) when
    /// `ASSETGC_TEST_SMTP_PYTHON` is not set, as [`require_service`] decides.
    pub fn start(opts: SinkOptions) -> Option<SmtpSink> {
        let python = require_service("the SMTP sink (aiosmtpd)", "ASSETGC_TEST_SMTP_PYTHON")?;
        let mut last_error = String::new();
        // The port is free when asked but may be taken before the sink binds it: try again.
        for _ in 0..3 {
            match Self::spawn(&python, opts) {
                Ok(sink) => return Some(sink),
                Err(e) => last_error = e,
            }
        }
        panic!("the SMTP sink did not start: {last_error}");
    }

    fn spawn(python: &str, opts: SinkOptions) -> Result<SmtpSink, String> {
        let dir = tempfile::tempdir().expect("a temp folder for the SMTP sink");
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
        let mut cmd = Command::new(python);
        cmd.arg(script)
            .arg(port.to_string())
            .arg(dir.path().join("mail"));
        let pki = pki();
        match opts.tls {
            Tls::None => {}
            Tls::StartTls => {
                cmd.arg("--starttls").arg(&pki.cert_pem).arg(&pki.key_pem);
            }
            Tls::Smtps => {
                cmd.arg("--smtps").arg(&pki.cert_pem).arg(&pki.key_pem);
            }
            Tls::StartTlsUntrusted => {
                cmd.arg("--starttls")
                    .arg(&pki.stranger_cert_pem)
                    .arg(&pki.stranger_key_pem);
            }
        }
        if let Some((user, pass)) = opts.auth {
            cmd.args(["--auth", user, pass]);
        }
        let stderr_path = dir.path().join("sink.log");
        let stderr = std::fs::File::create(&stderr_path).expect("create sink.log");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(15))
            .is_ok_and(|l| l.trim() == "ready");
        let sink = SmtpSink {
            child,
            port,
            opts,
            dir,
        };
        if ready {
            Ok(sink)
        } else {
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            Err(format!("no `ready` on port {port}; its stderr:\n{log}"))
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn ca_pem_path(&self) -> &'static Path {
        test_ca_pem()
    }

    /// The `smtp_url` that reaches this sink: `smtp://` (STARTTLS), `smtps://`, or
    /// `smtp://…?tls=none`, with the user and password percent-encoded.
    pub fn smtp_url(&self, user: Option<&str>, pass: Option<&str>) -> String {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let userinfo = match (user, pass) {
            (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
            (Some(u), None) => format!("{}@", enc(u)),
            _ => String::new(),
        };
        let (scheme, query) = match self.opts.tls {
            Tls::None => ("smtp", "?tls=none"),
            Tls::StartTls | Tls::StartTlsUntrusted => ("smtp", ""),
            Tls::Smtps => ("smtps", ""),
        };
        format!("{scheme}://{userinfo}127.0.0.1:{}{query}", self.port)
    }

    /// The messages received so far, raw, in the order they came.
    pub fn received(&self) -> Vec<Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read(p).expect("read a received message"))
            .collect()
    }

    /// The messages received, once there are at least `n` (waiting up to 5 seconds; fewer after
    /// that, for the test to report).
    pub fn messages(&self, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the sink wrote on stderr, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sink.log")).unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
