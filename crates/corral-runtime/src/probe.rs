//! Running one health check: TCP connect, HTTP GET, or a command. The engine decides when and
//! what the results mean; this only answers "did it pass, and if not, why".

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use corral_config::{Check, fill_port};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::reaper::Reaper;

/// The most of a response or of command output we read.
const MAX_READ: usize = 64 * 1024;

/// Where and how an exec probe runs.
pub struct ExecContext<'a> {
    pub reaper: &'a Reaper,
    pub workdir: &'a Path,
    pub env: &'a [(String, String)],
    /// An exec check runs as its unit does.
    pub identity: Option<&'a corral_config::Identity>,
}

/// Run `check` once within `timeout`. `Ok` carries a short note, `Err` the reason it failed.
pub async fn run(
    check: &Check,
    port: Option<u16>,
    timeout: Duration,
    ctx: ExecContext<'_>,
) -> Result<String, String> {
    match check {
        Check::Tcp { addr } => {
            let addr = fill_port(addr, port);
            match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Ok(format!("connected to {addr}")),
                Ok(Err(e)) => Err(format!("tcp {addr}: {e}")),
                Err(_) => Err(format!(
                    "tcp {addr}: no answer within {}",
                    corral_engine::fmt_duration(timeout)
                )),
            }
        }
        Check::Http {
            url,
            status,
            body,
            insecure,
        } => {
            let url = fill_port(url, port);
            match tokio::time::timeout(timeout, http_get(&url, *insecure)).await {
                Ok(Ok((code, text))) => {
                    let status_ok = match status {
                        Some(want) => code == *want,
                        None => (200..400).contains(&code),
                    };
                    if !status_ok {
                        return Err(format!("GET {url}: status {code}"));
                    }
                    match body {
                        Some(want) if !text.contains(want.as_str()) => {
                            Err(format!("GET {url}: status {code}, body lacks `{want}`"))
                        }
                        _ => Ok(format!("GET {url}: {code}")),
                    }
                }
                Ok(Err(e)) => Err(format!("GET {url}: {e}")),
                Err(_) => Err(format!(
                    "GET {url}: no answer within {}",
                    corral_engine::fmt_duration(timeout)
                )),
            }
        }
        Check::Exec { command, output } => {
            exec(command.to_argv(port), output.as_deref(), timeout, ctx).await
        }
        Check::Log { .. } => Err("log checks are matched by the output pump".into()),
        Check::Notify => Err("notify checks are passed by READY=1 on NOTIFY_SOCKET".into()),
    }
}

/// A minimal HTTP/1.1 GET (over TLS for `https://`): status and up to 64 KiB of body.
/// Hand-written because a probe needs no more than this, and an HTTP client crate would double
/// the runtime's build time.
async fn http_get(url: &str, insecure: bool) -> Result<(u16, String), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("only http:// and https:// URLs are supported".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?,
        None if tls => 443,
        None => 80,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    if !tls {
        return exchange(tcp, authority, path).await;
    }
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("`{host}` is not a server name: {e}"))?;
    let stream = tls::connector(insecure)?
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let certificate = e
                .get_ref()
                .and_then(|e| e.downcast_ref::<tokio_rustls::rustls::Error>())
                .is_some_and(|e| matches!(e, tokio_rustls::rustls::Error::InvalidCertificate(_)));
            if certificate {
                format!("TLS: {e} (a self-signed certificate? `insecure = true` accepts it)")
            } else {
                format!("TLS: {e}")
            }
        })?;
    exchange(stream, authority, path).await
}

/// Send the request and read the answer over a connected stream.
async fn exchange<S>(mut stream: S, authority: &str, path: &str) -> Result<(u16, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: corral\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A TLS server that closes without close_notify, after it answered: the answer
            // stands.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
        if buf.len() >= MAX_READ {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or("");
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: `{}`",
                status_line.chars().take(60).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((code, body))
}

/// The two TLS client set-ups a probe uses, each built once per daemon.
mod tls {
    use std::sync::{Arc, OnceLock};

    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::{
        ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
    };

    pub fn connector(insecure: bool) -> Result<TlsConnector, String> {
        static VERIFIED: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
        static INSECURE: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
        let slot = if insecure { &INSECURE } else { &VERIFIED };
        slot.get_or_init(|| build(insecure)).clone()
    }

    fn build(insecure: bool) -> Result<TlsConnector, String> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            // The system's trust store: a local CA (mkcert and the like) is installed there.
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// `insecure = true`: any certificate is accepted, but the handshake's signatures are still
    /// checked (the server holds the key of the certificate it shows).
    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            tokio_rustls::rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            tokio_rustls::rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

async fn exec(
    argv: Vec<String>,
    want: Option<&str>,
    timeout: Duration,
    ctx: ExecContext<'_>,
) -> Result<String, String> {
    let crate::spawn::Spawned {
        mut pipes,
        exit,
        pid,
        ..
    } = crate::spawn::spawn(
        ctx.reaper,
        crate::spawn::Spec {
            argv: &argv,
            cwd: ctx.workdir,
            env: ctx.env,
            // Killed with its group at the timeout; nothing of it outlives the check.
            marker: None,
            stdin: crate::spawn::Io::Null,
            stdout: crate::spawn::Io::Piped,
            stderr: crate::spawn::Io::Null,
            identity: ctx.identity,
            umask: None,
            rlimits: &[],
            cgroup_limits: Default::default(),
            daemon: false,
            own_binary: false,
        },
    )
    .map_err(|e| e.0)?;
    let stdout = pipes.stdout.take();
    // Reading a small pipe to its end on a blocking thread keeps this simple; the timeout
    // below kills the group, which closes the pipe and ends the read.
    let reader = tokio::task::spawn_blocking(move || {
        let mut text = Vec::new();
        if let Some(out) = stdout {
            let _ = out.take(MAX_READ as u64).read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let done = async {
        let status = exit.await.map_err(|_| "lost the exit status".to_string())?;
        let text = reader.await.unwrap_or_default();
        Ok::<_, String>((status, text))
    };
    match tokio::time::timeout(timeout, done).await {
        Ok(Ok((status, text))) => {
            if !status.success() {
                return Err(format!("`{}` ended with {status}", argv.join(" ")));
            }
            match want {
                Some(w) if !text.contains(w) => {
                    Err(format!("`{}` output lacks `{w}`", argv.join(" ")))
                }
                _ => Ok(format!("`{}` passed", argv.join(" "))),
            }
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            ctx.reaper.signal_group(pid, Signal::SIGKILL);
            Err(format!(
                "`{}` took longer than {}",
                argv.join(" "),
                corral_engine::fmt_duration(timeout)
            ))
        }
    }
}
