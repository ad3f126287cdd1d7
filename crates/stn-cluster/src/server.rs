//! What `stn-scheduler` and `stn-executor` add to Ballista's stock programs: the image
//! functions on the scheduler's session and in the executors' function registry, the model
//! folder checked at start-up and loaded on first use, mutual TLS when asked for ([`crate::tls`]),
//! and binding to 127.0.0.1 unless told otherwise (beyond it only with TLS or `--insecure`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_scheduler::scheduler_server::SessionBuilder;
use datafusion::execution::FunctionRegistry;
use datafusion::prelude::SessionConfig;
use stn_sql::{functions, Model, SqlOptions};

/// The host the programs bind to unless `--bind-host` says otherwise.
pub const DEFAULT_BIND_HOST: &str = "127.0.0.1";

/// Checks at start-up that `dir` is a run folder (it holds `model.stn`) without loading the
/// weights, so a wrong `--model` stops the program at once with the reason, and returns the
/// lazy model of it.
pub fn model_at_start(dir: &Path) -> Result<Model, String> {
    if !dir.is_dir() {
        return Err(format!(
            "--model {}: no such folder on this machine (every scheduler and executor needs the run folder at this path)",
            dir.display()
        ));
    }
    let checkpoint = stn_models::run::checkpoint_path(dir);
    if !checkpoint.is_file() {
        return Err(format!(
            "--model {}: not a run folder (no model.stn); make one with `stn train --out`",
            dir.display()
        ));
    }
    // An absolute path, so that a later change of working folder cannot change the model.
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("--model {}: {e}", dir.display()))?;
    Ok(Model::lazy(dir))
}

/// The scheduler's session: `base` (Ballista's session for a client's configuration) with the
/// image functions registered on it. The scheduler plans the clients' queries in this session;
/// planning asks the functions for their output type, which loads the model there.
pub fn scheduler_session(
    model: Model,
    base: impl Fn(SessionConfig) -> datafusion::common::Result<datafusion::execution::SessionState>
        + Send
        + Sync
        + 'static,
) -> SessionBuilder {
    Arc::new(move |config: SessionConfig| {
        let mut state = base(stn_sql::configure(config))?;
        for f in functions(model.clone(), SqlOptions::default()) {
            // `register_udf` adds to the session's functions; `with_scalar_functions` would
            // replace Ballista's and DataFusion's built-ins.
            state.register_udf(Arc::new(f))?;
        }
        Ok(state)
    })
}

/// The executors' function registry: Ballista's default (every built-in function) with the
/// image functions added.
pub fn executor_registry(model: Model) -> Arc<BallistaFunctionRegistry> {
    let mut registry = BallistaFunctionRegistry::default();
    for f in functions(model, SqlOptions::default()) {
        registry.scalar_functions.insert(f.name().to_string(), Arc::new(f));
    }
    Arc::new(registry)
}

/// The executors' execution engine: Ballista's default, after re-attaching encryption to each
/// task's plan with the executor's own keys ([`stn_sql::crypto::protect_plan`]): Ballista 55
/// drops encryption settings from the plans it sends, so without this an encrypted table could
/// not be read there and a `COPY` of a client with keys would write plaintext. A task whose
/// outputs would be less protected than the job asks fails instead. (Ballista's default
/// engine also pools connections for shuffle reads; its pool is internal to Ballista, so here
/// each shuffle read connects anew: the image jobs are map-only.)
pub struct ProtectingEngine {
    keys: Option<stn_table::crypto::Keys>,
    inner: ballista_executor::execution_engine::DefaultExecutionEngine,
}

impl ProtectingEngine {
    /// The engine of an executor with `keys` (None: it reads plaintext tables only and refuses
    /// to write the outputs of a job with keys).
    pub fn new(keys: Option<stn_table::crypto::Keys>) -> Self {
        ProtectingEngine { keys, inner: ballista_executor::execution_engine::DefaultExecutionEngine::new() }
    }
}

impl ballista_executor::execution_engine::ExecutionEngine for ProtectingEngine {
    fn create_query_stage_exec(
        &self,
        job_id: ballista_core::JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> datafusion::error::Result<Arc<dyn ballista_executor::execution_engine::QueryStageExecutor>> {
        let settings = stn_sql::crypto::settings(config);
        let plan = stn_sql::crypto::protect_plan(plan, self.keys.as_ref(), &settings)?;
        self.inner.create_query_stage_exec(
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )
    }
}

/// What both programs do first: check the model folder ([`model_at_start`]) and refuse to
/// listen beyond loopback without TLS unless `insecure` (with it, say on stderr what that
/// exposes: [`exposure_warning`]). Returns the lazy model, or the message to stop with.
pub fn start_up(
    program: &str,
    model: &Path,
    bind_host: &str,
    tls: bool,
    insecure: bool,
) -> Result<Model, String> {
    if let Some(w) = exposure_warning(program, bind_host).filter(|_| !tls) {
        if !insecure {
            return Err(format!(
                "{program}: --bind-host {bind_host} listens beyond this machine without TLS, so nothing would be \
                 authenticated or encrypted: refused. Give --tls-cert, --tls-key and --tls-ca (mutual TLS on every \
                 port: docs/privacy.md), or bind to 127.0.0.1 (the default) for a cluster on one machine, or give \
                 --insecure to listen there anyway, on a private network behind a firewall that admits only the \
                 cluster's machines and clients.\n{w}"
            ));
        }
        eprintln!("{w}");
    }
    model_at_start(model).map_err(|e| format!("{program}: {e}"))
}

/// Logging as Ballista's own programs set it up: `level` (unless `RUST_LOG` says otherwise),
/// thread names and ids if asked, to stdout, or to files in `log_dir` named `prefix` and
/// rotated by `rotation`.
pub fn init_logging(
    level: &str,
    thread_info: bool,
    log_dir: Option<&str>,
    rotation: ballista_core::config::LogRotationPolicy,
    prefix: &str,
) {
    use ballista_core::config::LogRotationPolicy;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::new(std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| level.to_string()));
    let tracing = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_thread_names(thread_info)
        .with_thread_ids(thread_info)
        .with_env_filter(filter);
    match log_dir {
        Some(dir) => {
            let file = match rotation {
                LogRotationPolicy::Minutely => tracing_appender::rolling::minutely(dir, prefix),
                LogRotationPolicy::Hourly => tracing_appender::rolling::hourly(dir, prefix),
                LogRotationPolicy::Daily => tracing_appender::rolling::daily(dir, prefix),
                LogRotationPolicy::Never => tracing_appender::rolling::never(dir, prefix),
            };
            tracing.with_writer(file).init();
        }
        None => tracing.with_writer(std::io::stdout).init(),
    }
}

/// Whether `host` is a loopback name or address (reachable from this machine only).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim();
    let h = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(h);
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The start-up warning of a program bound to `host` when that is not a loopback address.
pub fn exposure_warning(program: &str, host: &str) -> Option<String> {
    (!is_loopback(host)).then(|| {
        format!(
            "warning: {program} listens on {host}, beyond this machine, without TLS: nothing is \
             authenticated or encrypted. Anyone who can reach these ports can submit \
             queries, in clear text, that the executors run with their own rights and \
             credentials: read any file they can read (the images, the model, anything else on \
             their disks, `path` rows with allow_outside_paths=true), read any S3 bucket their \
             AWS credentials reach, and write query results anywhere they can write (`COPY ... \
             TO` a local path or a bucket), and receive every result. Run the cluster on a \
             private network or behind a firewall that admits only its own machines and clients."
        )
    })
}

/// The address form of `--bind-host` that Ballista can bind: an IP address as given (an IPv6
/// one in brackets, as a socket address needs it), `localhost` as 127.0.0.1. Any other name is
/// an error saying what to give instead.
pub fn bind_address(host: &str) -> Result<String, String> {
    let h = host.trim();
    let bare = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(h);
    if bare.eq_ignore_ascii_case("localhost") {
        return Ok("127.0.0.1".into());
    }
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip.to_string()),
        Ok(IpAddr::V6(ip)) => Ok(format!("[{ip}]")),
        Err(_) => Err(format!(
            "--bind-host `{host}`: not an IP address; give the address to listen on (127.0.0.1, ::1, \
             localhost, 0.0.0.0 or one of this machine's addresses)"
        )),
    }
}

/// Changes the default of the stock command line's `--bind-host` (0.0.0.0 in Ballista) to
/// [`DEFAULT_BIND_HOST`].
pub fn loopback_by_default(command: clap::Command) -> clap::Command {
    command.mut_arg("bind_host", |a| a.default_value(DEFAULT_BIND_HOST))
}

/// Parses a command line with [`loopback_by_default`] applied and its `--bind-host` made an
/// address Ballista binds ([`bind_address`]). An argument that is not UTF-8 is clap's error
/// naming it, not a panic.
fn parse_loopback<T: clap::Parser + BindHost>(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<T, clap::Error> {
    let matches = loopback_by_default(<T as clap::CommandFactory>::command()).try_get_matches_from(args)?;
    let mut a = <T as clap::FromArgMatches>::from_arg_matches(&matches)?;
    let host = a.bind_host_mut();
    *host = bind_address(host).map_err(bind_error)?;
    if a.tls().tls_cert.is_some() {
        // Under TLS the executors pull their tasks: push-staged scheduling would need a
        // plaintext gRPC server on every executor.
        let given = matches!(
            matches.value_source(a.policy_arg()),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        );
        if given && matches!(*a.policy_mut(), TaskSchedulingPolicy::PushStaged) {
            return Err(bind_error(format!(
                "--{}: push-staged scheduling is not available with TLS (the scheduler would send tasks to \
                 a plaintext executor port); under TLS the executors pull their tasks (pull-staged, the \
                 default then)",
                a.policy_arg().replace('_', "-")
            )));
        }
        *a.policy_mut() = TaskSchedulingPolicy::PullStaged;
    }
    Ok(a)
}

fn bind_error(e: String) -> clap::Error {
    clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n"))
}

/// `stn-scheduler`'s command line: `--model` and Ballista's scheduler flags.
#[derive(clap::Parser, Debug)]
#[command(name = "stn-scheduler", version)]
pub struct SchedulerArgs {
    /// The run folder of the trained model (written by `stn train`), at a path this machine
    /// can read. The scheduler reads it to plan queries (the output type depends on the
    /// transformer's output size).
    #[arg(long, value_name = "RUN_DIR")]
    pub model: std::path::PathBuf,
    /// Listen beyond loopback (--bind-host) without TLS, although nothing is then
    /// authenticated or encrypted.
    #[arg(long)]
    pub insecure: bool,
    /// Mutual TLS on the scheduler's port (gRPC, REST, Flight SQL) and on its connections.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// Ballista's own flags.
    #[command(flatten)]
    pub ballista: ballista_scheduler::config::Config,
}

/// `stn-executor`'s command line: `--model` and Ballista's executor flags.
#[derive(clap::Parser, Debug)]
#[command(name = "stn-executor", version)]
pub struct ExecutorArgs {
    /// The run folder of the trained model (written by `stn train`), at a path this machine
    /// can read; checked at start-up, its weights loaded when a task first needs them.
    #[arg(long, value_name = "RUN_DIR")]
    pub model: std::path::PathBuf,
    /// Memory the executor may hold in decoded images, across all its tasks: bytes, or with
    /// K, M, G (default: half the machine's memory).
    #[arg(long, value_name = "SIZE", value_parser = stn_table::memory::parse_bytes)]
    pub max_memory: Option<u64>,
    /// Listen beyond loopback (--bind-host) without TLS, although nothing is then
    /// authenticated or encrypted.
    #[arg(long)]
    pub insecure: bool,
    /// Mutual TLS on the executor's Flight port and on its connections.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// The executor's keys of encrypted tables (the master keys that wrap their data keys):
    /// encrypted tables are read, and the Parquet outputs of jobs with keys written encrypted,
    /// with these.
    #[command(flatten)]
    pub keys: stn_table::crypto::KeyArgs,
    /// Ballista's own flags.
    #[command(flatten)]
    pub ballista: ballista_executor::config::Config,
}

/// The command lines whose `--bind-host` [`parse_loopback`] makes an address Ballista binds,
/// and whose scheduling policy TLS makes pull-staged.
trait BindHost {
    fn bind_host_mut(&mut self) -> &mut String;
    fn tls(&self) -> &crate::tls::TlsArgs;
    fn policy_mut(&mut self) -> &mut TaskSchedulingPolicy;
    /// The clap id of the scheduling policy's flag.
    fn policy_arg(&self) -> &'static str;
}

impl BindHost for SchedulerArgs {
    fn bind_host_mut(&mut self) -> &mut String {
        &mut self.ballista.bind_host
    }
    fn tls(&self) -> &crate::tls::TlsArgs {
        &self.tls
    }
    fn policy_mut(&mut self) -> &mut TaskSchedulingPolicy {
        &mut self.ballista.scheduler_policy
    }
    fn policy_arg(&self) -> &'static str {
        "scheduler_policy"
    }
}

impl BindHost for ExecutorArgs {
    fn bind_host_mut(&mut self) -> &mut String {
        &mut self.ballista.bind_host
    }
    fn tls(&self) -> &crate::tls::TlsArgs {
        &self.tls
    }
    fn policy_mut(&mut self) -> &mut TaskSchedulingPolicy {
        &mut self.ballista.task_scheduling_policy
    }
    fn policy_arg(&self) -> &'static str {
        "task_scheduling_policy"
    }
}

impl SchedulerArgs {
    /// Parses `args` (the program's name first), `--bind-host` defaulting to 127.0.0.1 and
    /// made an address Ballista binds ([`bind_address`]).
    pub fn try_parse_from(
        args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    ) -> Result<Self, clap::Error> {
        parse_loopback(args)
    }
}

impl ExecutorArgs {
    /// Parses `args` (the program's name first), `--bind-host` defaulting to 127.0.0.1 and
    /// made an address Ballista binds ([`bind_address`]).
    pub fn try_parse_from(
        args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    ) -> Result<Self, clap::Error> {
        parse_loopback(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn both_programs_bind_to_loopback_unless_told() {
        let s = SchedulerArgs::try_parse_from(args(&["stn-scheduler", "--model", "m"])).unwrap();
        assert_eq!(s.ballista.bind_host, "127.0.0.1");
        assert_eq!(s.ballista.bind_port, 50050, "the other stock defaults stay");
        let e = ExecutorArgs::try_parse_from(args(&["stn-executor", "--model", "m"])).unwrap();
        assert_eq!(e.ballista.bind_host, "127.0.0.1");
        assert_eq!((e.ballista.bind_port, e.ballista.bind_grpc_port), (50051, 50052));
        let s =
            SchedulerArgs::try_parse_from(args(&["stn-scheduler", "--model", "m", "--bind-host", "0.0.0.0"]))
                .unwrap();
        assert_eq!(s.ballista.bind_host, "0.0.0.0");
        let e = ExecutorArgs::try_parse_from(args(&[
            "stn-executor",
            "--model",
            "m",
            "--bind-host",
            "10.0.0.6",
            "--vcores",
            "3",
        ]))
        .unwrap();
        assert_eq!((e.ballista.bind_host.as_str(), e.ballista.vcores), ("10.0.0.6", 3));
        assert!(SchedulerArgs::try_parse_from(args(&["stn-scheduler"])).is_err(), "--model is required");
    }

    #[test]
    fn loopback_names_bind_and_other_names_are_a_clear_error() {
        for (given, bound) in
            [("localhost", "127.0.0.1"), ("::1", "[::1]"), ("[::1]", "[::1]"), ("0.0.0.0", "0.0.0.0")]
        {
            let e =
                ExecutorArgs::try_parse_from(args(&["stn-executor", "--model", "m", "--bind-host", given]))
                    .unwrap();
            assert_eq!(e.ballista.bind_host, bound, "{given}");
            let addr = format!("{}:{}", e.ballista.bind_host, e.ballista.bind_port);
            assert!(addr.parse::<std::net::SocketAddr>().is_ok(), "Ballista parses {addr}");
            assert!(is_loopback(given) == (given != "0.0.0.0"), "{given}");
        }
        let e = SchedulerArgs::try_parse_from(args(&[
            "stn-scheduler",
            "--model",
            "m",
            "--bind-host",
            "sched.example",
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("sched.example") && e.contains("not an IP address"), "{e}");
    }

    #[test]
    fn a_non_utf8_argument_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStringExt;
        let bad = std::ffi::OsString::from_vec(vec![b'm', 0xff, 0xfe]);
        let argv: Vec<std::ffi::OsString> =
            vec!["stn-executor".into(), "--bind-host".into(), bad.clone(), "--model".into(), "m".into()];
        assert!(ExecutorArgs::try_parse_from(argv).is_err());
        let argv: Vec<std::ffi::OsString> =
            vec!["stn-scheduler".into(), "--model".into(), "m".into(), "--namespace".into(), bad];
        assert!(SchedulerArgs::try_parse_from(argv).is_err());
    }

    #[test]
    fn exposure_is_said_beyond_loopback_only() {
        for host in ["127.0.0.1", "127.0.3.4", "::1", "localhost", "LOCALHOST"] {
            assert!(is_loopback(host) && exposure_warning("p", host).is_none(), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "sched.example"] {
            let w = exposure_warning("stn-scheduler", host).unwrap_or_else(|| panic!("{host}"));
            assert!(w.contains(host) && w.contains("without TLS") && w.contains("authenticated"), "{w}");
            assert!(w.contains("S3") && w.contains("write") && w.contains("credentials"), "{w}");
        }
    }

    #[test]
    fn listening_beyond_loopback_needs_insecure() {
        let dir = std::env::temp_dir().join(format!("stn-cluster-insecure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.stn"), b"x").unwrap();
        for host in ["0.0.0.0", "10.0.0.5", "[::]"] {
            let e = start_up("stn-executor", &dir, host, false, false).map(|_| ()).unwrap_err();
            assert!(e.contains("refused") && e.contains("--insecure") && e.contains(host), "{e}");
            assert!(e.contains("--tls-cert"), "{e}");
            assert!(start_up("stn-executor", &dir, host, false, true).is_ok(), "{host}");
            assert!(start_up("stn-executor", &dir, host, true, false).is_ok(), "with TLS: {host}");
        }
        assert!(start_up("stn-scheduler", &dir, "127.0.0.1", false, false).is_ok());
        assert!(start_up("stn-scheduler", &dir, "[::1]", false, false).is_ok());
        let e =
            SchedulerArgs::try_parse_from(args(&["stn-scheduler", "--model", "m", "--insecure"])).unwrap();
        assert!(e.insecure);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_means_pull_staged_scheduling() {
        let tls = ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem"];
        let plain = ExecutorArgs::try_parse_from(args(&["stn-executor", "--model", "m"])).unwrap();
        assert!(matches!(plain.ballista.task_scheduling_policy, TaskSchedulingPolicy::PushStaged));
        let mut v = vec!["stn-executor", "--model", "m"];
        v.extend(tls);
        let e = ExecutorArgs::try_parse_from(args(&v)).unwrap();
        assert!(matches!(e.ballista.task_scheduling_policy, TaskSchedulingPolicy::PullStaged));
        assert_eq!(e.tls.tls_ca.as_deref(), Some(Path::new("ca.pem")));
        let mut v = vec!["stn-scheduler", "--model", "m"];
        v.extend(tls);
        let s = SchedulerArgs::try_parse_from(args(&v)).unwrap();
        assert!(matches!(s.ballista.scheduler_policy, TaskSchedulingPolicy::PullStaged));
        v.extend(["--scheduler-policy", "push-staged"]);
        let e = SchedulerArgs::try_parse_from(args(&v)).unwrap_err().to_string();
        assert!(e.contains("--scheduler-policy") && e.contains("not available with TLS"), "{e}");
        let e = ExecutorArgs::try_parse_from(args(&["stn-executor", "--model", "m", "--tls-cert", "c.pem"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-key") && e.contains("--tls-ca"), "the three go together: {e}");
    }

    #[test]
    fn a_wrong_model_folder_stops_at_start() {
        let dir = std::env::temp_dir().join(format!("stn-cluster-model-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let e = model_at_start(&dir).unwrap_err();
        assert!(e.contains("no such folder") && e.contains(&dir.display().to_string()), "{e}");
        std::fs::create_dir_all(&dir).unwrap();
        let e = model_at_start(&dir).unwrap_err();
        assert!(e.contains("not a run folder (no model.stn)"), "{e}");
        std::fs::write(dir.join("model.stn"), b"x").unwrap();
        let m = model_at_start(&dir).unwrap();
        assert!(!m.is_loaded(), "nothing is loaded at start-up");
        assert!(
            m.get().unwrap_err().contains("cannot load the model from"),
            "a bad file is the query's error"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
