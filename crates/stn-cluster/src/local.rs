//! A cluster of real `stn-scheduler` and `stn-executor` processes on this machine's loopback
//! (free ports, one work folder each), for trials, tests and benchmarks; every process is
//! killed when the [`LocalCluster`] drops. On several machines, start the programs by hand
//! (README: "Scale-out").

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::ClusterTls;
use crate::{ClusterError, Result};

/// A child process, killed when dropped; its output goes to a log file.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`, stdout and stderr into `log`.
    pub fn spawn(program: &Path, args: &[String], log: PathBuf) -> Result<Proc> {
        Proc::spawn_with(program, args, &[], log)
    }

    /// [`Proc::spawn`] with more environment variables.
    pub fn spawn_with(
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> Result<Proc> {
        let fail =
            |e: std::io::Error| ClusterError::Model(format!("cannot start {}: {e}", program.display()));
        let f = std::fs::File::create(&log).map_err(fail)?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(f.try_clone().map_err(fail)?)
            .stderr(f)
            .spawn()
            .map_err(fail)?;
        Ok(Proc { child, log })
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; another program may take it after).
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClusterError::Model(format!("no free port on 127.0.0.1: {e}")))
}

/// The executors registered with the scheduler at 127.0.0.1:`port` (its REST API,
/// `/api/executors`), or None while it does not answer.
pub fn registered_executors(port: u16) -> Option<Vec<serde_json::Value>> {
    registered_executors_over(port, None)
}

/// [`registered_executors`] of a scheduler that speaks TLS (asked with `tls`'s certificate), or
/// of one that does not (`tls` None).
pub fn registered_executors_over(port: u16, tls: Option<&ClusterTls>) -> Option<Vec<serde_json::Value>> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = "GET /api/executors HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut body = String::new();
    match tls {
        None => {
            tcp.write_all(request.as_bytes()).ok()?;
            tcp.read_to_string(&mut body).ok()?;
        }
        Some(tls) => {
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").ok()?;
            let mut conn = rustls::ClientConnection::new(tls.rustls_client(), name).ok()?;
            let mut s = rustls::Stream::new(&mut conn, &mut tcp);
            s.write_all(request.as_bytes()).ok()?;
            // The server may close without a TLS close_notify: what was read counts.
            let mut bytes = Vec::new();
            let _ = s.read_to_end(&mut bytes);
            body = String::from_utf8(bytes).ok()?;
        }
    }
    let json = body.split_once("\r\n\r\n")?.1;
    serde_json::from_str::<Vec<serde_json::Value>>(json).ok()
}

/// How to start a [`LocalCluster`].
#[derive(Debug, Clone)]
pub struct LocalClusterConfig {
    /// The folder holding the `stn-scheduler` and `stn-executor` programs.
    pub bin_dir: PathBuf,
    /// The scheduler's `--model`.
    pub model: PathBuf,
    /// One executor per entry, with this `--model`.
    pub executor_models: Vec<PathBuf>,
    /// Each executor's `--vcores` (task slots).
    pub vcores: usize,
    /// More flags for the scheduler.
    pub scheduler_args: Vec<String>,
    /// More flags for each executor.
    pub executor_args: Vec<String>,
    /// Where the work folders and logs go.
    pub dir: PathBuf,
    /// How long to wait for the scheduler to answer and every executor to register.
    pub timeout: Duration,
    /// Mutual TLS for every process (`--tls-cert`, `--tls-key`, `--tls-ca`; one certificate for
    /// all of them, valid for 127.0.0.1), or None for plaintext.
    pub tls: Option<crate::tls::TlsArgs>,
    /// More environment variables for every process (an S3 endpoint and its credentials, ...).
    pub env: Vec<(String, String)>,
}

impl LocalClusterConfig {
    /// `executors` executors of `vcores` slots with the same `model` as the scheduler.
    pub fn new(bin_dir: &Path, model: &Path, executors: usize, vcores: usize, dir: &Path) -> Self {
        LocalClusterConfig {
            bin_dir: bin_dir.to_path_buf(),
            model: model.to_path_buf(),
            executor_models: vec![model.to_path_buf(); executors],
            vcores,
            scheduler_args: Vec::new(),
            executor_args: Vec::new(),
            dir: dir.to_path_buf(),
            timeout: Duration::from_secs(60),
            tls: None,
            env: Vec::new(),
        }
    }
}

/// `stn-scheduler` and `stn-executor`s on free loopback ports; dropped, it kills them all.
#[derive(Debug)]
pub struct LocalCluster {
    /// The executors (None once [`LocalCluster::kill_executor`] took one).
    pub executors: Vec<Option<Proc>>,
    /// The scheduler.
    pub scheduler: Proc,
    /// The scheduler's port on 127.0.0.1.
    pub port: u16,
    /// The processes' TLS (also this process's, to ask the scheduler about its executors).
    tls: Option<ClusterTls>,
}

impl LocalCluster {
    /// Starts the scheduler and the executors and waits until every executor has registered.
    /// The ports are chosen free, but another program may take one before a process binds it:
    /// then the whole cluster is started again on other ports (up to three times).
    pub fn start(cfg: &LocalClusterConfig) -> Result<LocalCluster> {
        let mut attempt = 1;
        loop {
            match Self::start_once(cfg) {
                Err(ClusterError::Model(m)) if attempt < 3 && m.contains("Address already in use") => {
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    fn start_once(cfg: &LocalClusterConfig) -> Result<LocalCluster> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| ClusterError::Model(format!("cannot create {}: {e}", cfg.dir.display())))?;
        let port = free_port()?;
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let tls = match &cfg.tls {
            Some(t) => t.load().map_err(ClusterError::Model)?,
            None => None,
        };
        let tls_args = match &cfg.tls {
            Some(crate::tls::TlsArgs { tls_cert: Some(c), tls_key: Some(k), tls_ca: Some(a) }) => s(&[
                "--tls-cert",
                &c.display().to_string(),
                "--tls-key",
                &k.display().to_string(),
                "--tls-ca",
                &a.display().to_string(),
            ]),
            _ => Vec::new(),
        };
        let mut args = s(&["--model", &cfg.model.display().to_string(), "--bind-port", &port.to_string()]);
        args.extend(s(&["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"]));
        args.extend(tls_args.iter().cloned());
        args.extend(cfg.scheduler_args.iter().cloned());
        let scheduler = Proc::spawn_with(
            &cfg.bin_dir.join("stn-scheduler"),
            &args,
            &cfg.env,
            cfg.dir.join("scheduler.log"),
        )?;
        let mut cluster = LocalCluster { executors: Vec::new(), scheduler, port, tls };
        cluster.wait(cfg.timeout, "the scheduler to answer", |_| true)?;
        for (i, m) in cfg.executor_models.iter().enumerate() {
            let work = cfg.dir.join(format!("work-{i}"));
            std::fs::create_dir_all(&work)
                .map_err(|e| ClusterError::Model(format!("cannot create {}: {e}", work.display())))?;
            let mut args = s(&["--model", &m.display().to_string(), "--bind-host", "127.0.0.1"]);
            args.extend(s(&["--scheduler-host", "127.0.0.1", "--scheduler-port", &port.to_string()]));
            args.extend(s(&["--vcores", &cfg.vcores.max(1).to_string()]));
            args.extend(s(&[
                "--bind-port",
                &free_port()?.to_string(),
                "--bind-grpc-port",
                &free_port()?.to_string(),
            ]));
            args.extend(s(&["--bind-health-port", &free_port()?.to_string()]));
            args.extend(s(&[
                "--work-dir",
                &work.display().to_string(),
                "--scheduler-connect-timeout-seconds",
                "20",
            ]));
            args.extend(tls_args.iter().cloned());
            args.extend(cfg.executor_args.iter().cloned());
            let log = cfg.dir.join(format!("executor-{i}.log"));
            cluster.executors.push(Some(Proc::spawn_with(
                &cfg.bin_dir.join("stn-executor"),
                &args,
                &cfg.env,
                log,
            )?));
        }
        let n = cfg.executor_models.len();
        cluster.wait(cfg.timeout, "every executor to register", |e| e.len() == n)?;
        Ok(cluster)
    }

    /// Its URL, `df://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    /// Kills executor `i` (if it still runs).
    pub fn kill_executor(&mut self, i: usize) {
        if let Some(e) = self.executors.get_mut(i) {
            drop(e.take());
        }
    }

    fn wait(
        &mut self,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            if registered_executors_over(self.port, self.tls.as_ref()).is_some_and(|e| ready(&e)) {
                return Ok(());
            }
            let gone = self.scheduler.exited() || self.executors.iter_mut().flatten().any(Proc::exited);
            if gone || start.elapsed() > timeout {
                return Err(ClusterError::Model(format!(
                    "{} waiting for {what}; logs:\n{}",
                    if gone { "a process exited" } else { "timed out" },
                    self.logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every process's log, one after the other.
    pub fn logs(&self) -> String {
        let mut s = format!("--- scheduler\n{}", self.scheduler.log());
        for (i, e) in self.executors.iter().enumerate() {
            if let Some(e) = e {
                s.push_str(&format!("--- executor {i}\n{}", e.log()));
            }
        }
        s
    }
}
