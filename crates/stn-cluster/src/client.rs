//! The client side: connect to a cluster, run SQL there, rectify a folder of Parquet files
//! there, and an in-process cluster.
//!
//! Queries are planned on the client, so the client needs the model's run folder too (the
//! output type of `stn_rectify` depends on the transformer's output size); the executors load
//! the weights themselves, from their own `--model`.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{job_status, GetJobStatusParams};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::physical_plan::{collect, execute_stream, ExecutionPlan};
use datafusion::prelude::{ident, lit, DataFrame, Expr, ParquetReadOptions, SessionConfig, SessionContext};
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::StreamExt;
use stn_data::image_io::{Encoding, PngLevel};
use stn_models::rectify::Rectifier;
use stn_sql::{functions, quote_option_value, Model, SqlOptions};
use stn_table::batch::Timings;
use stn_table::delta::{DeltaInput, DeltaMode, DeltaSink};
use stn_table::rectify::{
    clean_partials, plan_table, rectify_lineage, write_file, Event, FilePlan, FileReport, FileTask,
    RectifiedBatch, RectifyOptions,
};
use stn_table::TableError;

use crate::tls::ClusterTls;
use crate::{ClusterError, Result};

/// Ballista's scheduler port when a URL names none.
pub const DEFAULT_PORT: u16 = 50050;

/// How long [`connect`] waits for the scheduler to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The scheduler's host and port of a `df://HOST:PORT` URL (the port defaults to 50050; an
/// IPv6 host is written in brackets, `df://[::1]:50050`).
pub fn parse_url(url: &str) -> Result<(String, u16)> {
    let bad = |message: &str| ClusterError::Url { url: url.to_string(), message: message.to_string() };
    let rest = url.strip_prefix("df://").ok_or_else(|| bad("it must start with df://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(bad("only a host and a port may follow df://"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(|| bad("an IPv6 host needs its closing ]"))?;
        (format!("[{h}]"), tail.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("no host"));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err(bad("an IPv6 host goes in brackets"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| bad(&format!("the port `{p}` is not a number from 1 to 65535")))?,
    };
    Ok((host, port))
}

/// An error with its causes, one after the other (tonic's errors say little at the top).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// A gRPC client of the scheduler at `url`, or an error saying that none answers there.
async fn scheduler_client(
    url: &str,
    config: &SessionConfig,
) -> Result<SchedulerGrpcClient<tonic::transport::Channel>> {
    let (host, port) = parse_url(url)?;
    let unreachable = |message: String| ClusterError::Unreachable { url: url.to_string(), message };
    let scheme = if config.ballista_use_tls() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{host}:{port}"))
        .map_err(|e| unreachable(chain(&e)))?;
    if let Some(tls) = config.ballista_override_create_grpc_client_endpoint() {
        endpoint = tls.configure_endpoint(endpoint).map_err(|e| unreachable(chain(e.as_ref())))?;
    }
    let tls = config.ballista_use_tls();
    let hint = |message: String| {
        unreachable(if tls {
            format!(
                "{message} (a TLS connection failed: is the scheduler's certificate signed by --tls-ca, valid for \
                 this host, and this client's certificate signed by the cluster's CA?)"
            )
        } else {
            format!("{message} (no gRPC answer in plaintext: if the cluster speaks TLS, give --tls-cert, --tls-key and --tls-ca)")
        })
    };
    let connect = async {
        let mut client = SchedulerGrpcClient::new(endpoint.connect().await.map_err(|e| hint(chain(&e)))?);
        // One request proves the connection: a plaintext client of a TLS port, or a client
        // whose certificate the scheduler refuses, connects and then fails here. Any answer of
        // the scheduler (an unknown job) will do; an error without a cause came from it.
        match client.get_job_status(GetJobStatusParams { job_id: String::new() }).await {
            Err(e) if std::error::Error::source(&e).is_some() => Err(hint(chain(&e))),
            _ => Ok(client),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(r) => r,
        Err(_) => Err(unreachable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))),
    }
}

/// A cluster to reach: its scheduler's `df://HOST:PORT` URL and, for a cluster that speaks
/// mutual TLS, this client's certificate, key and the cluster's CA.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The scheduler, `df://HOST:PORT`.
    pub url: String,
    /// TLS for every connection to the cluster (None: plaintext, for a cluster without TLS).
    pub tls: Option<ClusterTls>,
}

impl Remote {
    /// The cluster at `url`, reached without TLS.
    pub fn new(url: impl Into<String>) -> Self {
        Remote { url: url.into(), tls: None }
    }

    /// The same cluster reached over `tls`.
    pub fn with_tls(self, tls: Option<ClusterTls>) -> Self {
        Remote { tls, ..self }
    }

    /// `config` with this cluster's TLS (when it has one) on every connection of the session.
    pub fn config(&self, config: SessionConfig) -> SessionConfig {
        match &self.tls {
            Some(t) => t.session(config),
            None => config,
        }
    }
}

impl From<&str> for Remote {
    fn from(url: &str) -> Self {
        Remote::new(url)
    }
}

/// The session configuration a cluster's client starts from: Ballista's, with the file
/// settings of `stn_sql::configure` and one task per partition (so that the scheduler spreads
/// partitions over executors instead of packing them onto the largest).
pub fn cluster_config() -> SessionConfig {
    stn_sql::configure(SessionConfig::new_with_ballista())
        .with_information_schema(false)
        .set_usize("ballista.scheduler.max_partitions_per_task", 1)
}

/// `config` for jobs with a deadline ([`sql_within`], [`JobLimits::timeout`]): the client
/// tracks its jobs by asking the scheduler (Ballista's pull mode), so it knows a job's id as soon
/// as the job is submitted and can cancel it when the deadline passes (in the default push mode
/// the id arrives with the job's first status, which may be never for a stuck job).
pub fn deadline_config(config: SessionConfig) -> SessionConfig {
    config.set_bool(ballista_core::config::BALLISTA_CLIENT_PULL, true)
}

/// A session on the cluster at `url` (`df://HOST:PORT`) with the image functions registered
/// (for planning: the executors run their own). Fails at once, with the reason, when no
/// scheduler answers there. A quoted path is a table, as in `stn sql`; every process of the
/// cluster must be able to read it at that path. The functions' options travel with each
/// call, as their second argument (`stn_rectify(image, 'format=jpeg')`): the executors know
/// nothing of this process's settings.
pub async fn connect(url: &str, model: Model) -> Result<SessionContext> {
    connect_with(url, model, cluster_config()).await
}

/// [`connect`] with a session configuration of one's own (start from [`cluster_config`]).
pub async fn connect_with(url: &str, model: Model, config: SessionConfig) -> Result<SessionContext> {
    drop(scheduler_client(url, &config).await?);
    let state = SessionStateBuilder::new().with_config(config).with_default_features().build();
    let ctx = SessionContext::remote_with_state(url, state).await?.enable_url_table();
    // After the context exists: Ballista rebuilds the session's function list when it makes
    // the context, and would drop functions registered before.
    stn_sql::register(&ctx, model, SqlOptions::default());
    Ok(ctx)
}

/// Gives the session `ctx` of a cluster the keys of encrypted tables: it reads their schemas here
/// with them, and its jobs carry only what the executors need to protect them (whether keys are
/// in use, the outputs' master key ID: [`stn_sql::crypto::CryptoSettings`]); each executor reads
/// and writes with its own keys (`stn-executor --keys`). The scheduler plans without reading
/// the files' footers (no statistics), so it needs no keys.
pub fn use_keys(ctx: &SessionContext, keys: stn_table::crypto::Keys) {
    stn_sql::crypto::use_keys(ctx, keys);
    ctx.state_ref().write().config_mut().options_mut().execution.collect_statistics = false;
}

/// Refuses to send decrypted rows of encrypted tables over a network in plaintext: a cluster
/// reached without TLS must be on this machine (a loopback address).
pub fn require_private(cluster: &Remote) -> Result<()> {
    let (host, _) = parse_url(&cluster.url)?;
    if cluster.tls.is_some() || crate::server::is_loopback(&host) {
        return Ok(());
    }
    Err(ClusterError::Model(format!(
        "{}: encrypted tables travel decrypted between the executors and this client, and this cluster is \
         reached without TLS: refused. Start the cluster with --tls-cert/--tls-key/--tls-ca and give this \
         client its certificate (docs/privacy.md)",
        cluster.url
    )))
}

/// Runs one SQL statement on the cluster to the end: a query's rows, collected here, or the
/// count of a `COPY ... TO` (which the executors write). Delta tables are read as
/// [`register_delta`] says.
pub async fn sql(ctx: &SessionContext, statement: &str) -> Result<Vec<RecordBatch>> {
    register_delta(ctx, statement).await?;
    Ok(ctx.sql(statement).await?.collect().await?)
}

/// Makes the Delta tables `statement` names by quoted path (`'path'`, `'path@vN'`,
/// `'path@yyyyMMddHHmmssSSS'`: [`stn_sql::delta_reference`]) readable by the cluster's
/// executors, which read Parquet files and know nothing of Delta logs: each is registered in
/// `ctx`, under the name the statement gives it, as the union of its data files read as plain
/// Parquet with the log's column names and partition values applied in the plan
/// ([`DeltaInput::plain_frame`]). A version with deletion vectors is refused (Ballista 55
/// repeats rows of a union over the per-file stages that deleting rows by position needs);
/// [`rectify_table`] applies them, one job per data file.
pub async fn register_delta(ctx: &SessionContext, statement: &str) -> Result<()> {
    for name in stn_sql::delta_tables_in(statement) {
        let Some((path, at)) = stn_sql::delta_reference(&name) else { continue };
        let table = DeltaInput::open(&path, &at)?;
        let deleting = table.parts.iter().filter(|p| p.deleted > 0).count();
        if deleting > 0 {
            // Rows deleted by position need a stage of their own per data file, and Ballista 55
            // returns some rows twice from a union over such stages.
            return Err(ClusterError::Model(format!(
                "'{name}': version {} of this Delta table has deletion vectors ({deleting} of its data files), \
                 which SQL on a cluster cannot apply (Ballista 55 repeats rows of a union over the \
                 per-file stages they need); run `stn sql` without --cluster, or `stn rectify --cluster`, \
                 which applies them (one job per data file)",
                table.version
            )));
        }
        let mut union: Option<DataFrame> = None;
        for i in 0..table.parts.len() {
            let part = table.plain_frame(ctx, i).await?;
            union = Some(match union {
                None => part,
                Some(u) => u.union(part)?,
            });
        }
        let view = match union {
            Some(u) => u.into_view(),
            // A version without data files: its columns, no rows.
            None => {
                let schema = datafusion::common::DFSchema::try_from(table.schema.as_ref().clone())?;
                let empty = datafusion::logical_expr::LogicalPlan::EmptyRelation(
                    datafusion::logical_expr::EmptyRelation {
                        produce_one_row: false,
                        schema: Arc::new(schema),
                    },
                );
                DataFrame::new(ctx.state(), empty).into_view()
            }
        };
        ctx.register_table(datafusion::common::TableReference::bare(name), view)?;
    }
    Ok(())
}

/// Runs a query on the cluster and returns its rows with the id of the cluster's job.
pub async fn collect_job(df: DataFrame) -> Result<(Vec<RecordBatch>, Option<String>)> {
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let rows = collect(plan.clone(), task_ctx).await?;
    Ok((rows, job_id(&plan)))
}

/// The cluster's job id of a plan made by a cluster session, once it has run.
pub fn job_id(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
        .and_then(|d| d.job_id())
        .map(|j| j.to_string())
}

/// Cancels job `job_id` on the scheduler at `url` (reached with the connection settings of
/// `config`); says what happened, in words.
pub async fn cancel_job(url: &str, config: &SessionConfig, job_id: Option<&str>) -> String {
    let Some(id) = job_id else {
        return "it had not reached the scheduler".into();
    };
    let cancel = async {
        let mut client = scheduler_client(url, config).await.map_err(|e| e.to_string())?;
        client
            .cancel_job(ballista_core::serde::protobuf::CancelJobParams { job_id: id.to_string() })
            .await
            .map(|r| r.into_inner().cancelled)
            .map_err(|e| e.message().to_string())
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, cancel).await {
        Ok(Ok(true)) => format!("job {id} was cancelled on the cluster"),
        Ok(Ok(false)) => format!("the scheduler did not cancel job {id} (it had ended)"),
        Ok(Err(e)) => format!("cancelling job {id} failed: {e}"),
        Err(_) => format!("cancelling job {id}: no answer within {} s", CONNECT_TIMEOUT.as_secs()),
    }
}

/// Asks the scheduler at `url` to have the executors delete job `job_id`'s files (its results
/// and shuffle data in their work folders) now, rather than minutes after the job (Ballista's
/// delayed clean-up); call it once the results are read. A failure is logged, not returned:
/// the delayed clean-up still happens.
pub async fn clean_job(url: &str, config: &SessionConfig, job_id: Option<&str>) {
    let Some(id) = job_id else { return };
    let clean = async {
        let mut client = scheduler_client(url, config).await.map_err(|e| e.to_string())?;
        client
            .clean_job_data(ballista_core::serde::protobuf::CleanJobDataParams {
                job_id: id.to_string(),
                remove_stage_ids: Vec::new(),
            })
            .await
            .map_err(|e| e.message().to_string())
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, clean).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => log::warn!("asking the cluster to delete the files of job {id}: {e}"),
        Err(_) => log::warn!("asking the cluster to delete the files of job {id}: no answer"),
    }
}

/// [`sql`] with a deadline: a statement whose job has not finished within `timeout` is
/// cancelled on the cluster (at `url`) and is an error saying so; None waits as long as it takes.
/// Make `ctx` with [`deadline_config`], so that the job can be named and cancelled. Once the
/// rows are here, the executors are asked to delete the job's files ([`clean_job`]).
pub async fn sql_within(
    ctx: &SessionContext,
    url: &str,
    statement: &str,
    timeout: Option<Duration>,
) -> Result<Vec<RecordBatch>> {
    register_delta(ctx, statement).await?;
    let deadline = timeout.map(|limit| tokio::time::Instant::now() + limit);
    let df = ctx.sql(statement).await?;
    let task_ctx = Arc::new(df.task_ctx());
    let config = ctx.state().config().clone();
    let keys = stn_sql::crypto::session_keys(ctx);
    let allow_plaintext = stn_sql::crypto::settings(&config).allow_plaintext_output;
    let check = stn_sql::crypto::CopyCheck::before(df.logical_plan(), keys.as_ref(), allow_plaintext)?;
    stn_sql::prepare_copy(ctx, df.logical_plan()).await?;
    let plan = df.create_physical_plan().await?;
    let mut stream = execute_stream(plan.clone(), task_ctx)?;
    let mut rows = Vec::new();
    loop {
        let next = match deadline {
            Some(d) => tokio::time::timeout_at(d, stream.next()).await,
            None => Ok(stream.next().await),
        };
        match next {
            Ok(Some(b)) => rows.push(b?),
            Ok(None) => {
                clean_job(url, &config, job_id(&plan).as_deref()).await;
                if let Some(check) = check {
                    check.after()?;
                }
                return Ok(rows);
            }
            Err(_) => {
                drop(stream);
                let cancelled = cancel_job(url, &config, job_id(&plan).as_deref()).await;
                return Err(ClusterError::Timeout {
                    what: "the query".into(),
                    seconds: timeout.unwrap_or_default().as_secs(),
                    cancelled,
                });
            }
        }
    }
}

/// The executors that hold the results of a finished job (its last stage's partitions), by id.
pub async fn job_executors(url: &str, config: &SessionConfig, job_id: &str) -> Result<BTreeSet<String>> {
    let mut client = scheduler_client(url, config).await?;
    let status = client
        .get_job_status(GetJobStatusParams { job_id: job_id.to_string() })
        .await
        .map_err(|e| ClusterError::Unreachable { url: url.to_string(), message: e.message().to_string() })?
        .into_inner();
    match status.status.and_then(|s| s.status) {
        Some(job_status::Status::Successful(s)) => Ok(s
            .partition_location
            .iter()
            .filter_map(|p| p.executor_meta.as_ref().map(|m| m.id.clone()))
            .collect()),
        other => Err(ClusterError::Model(format!("job {job_id} has not succeeded: {other:?}"))),
    }
}

/// Starts an in-process cluster: Ballista's standalone scheduler on a free `localhost` port and
/// `executors` executors of `vcores` task slots each, all in the current tokio runtime (they
/// live as long as it does), with the image functions of `model`. Returns its `df://` URL.
pub async fn start_in_process(model: Model, executors: usize, vcores: usize) -> Result<String> {
    let start =
        |e: &dyn std::fmt::Display| ClusterError::Model(format!("cannot start the in-process cluster: {e}"));
    let mut state = SessionStateBuilder::new().with_config(cluster_config()).with_default_features().build();
    for f in functions(model, SqlOptions::default()) {
        state.register_udf(Arc::new(f))?;
    }
    let addr = ballista_scheduler::standalone::new_standalone_scheduler_from_state(&state)
        .await
        .map_err(|e| start(&e))?;
    // Ballista binds it to `localhost`: 127.0.0.1 or ::1, as the system resolves it.
    let url = format!("df://{addr}");
    let endpoint = format!("http://{addr}");
    let mut scheduler = None;
    for _ in 0..100 {
        match SchedulerGrpcClient::connect(endpoint.clone()).await {
            Ok(c) => {
                scheduler = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let scheduler = scheduler.ok_or_else(|| start(&"the scheduler did not answer within 5 s"))?;
    for _ in 0..executors.max(1) {
        ballista_executor::new_standalone_executor_from_state(scheduler.clone(), vcores.max(1), &state)
            .await
            .map_err(|e| start(&e))?;
    }
    Ok(url)
}

/// The option string of the image functions for a table run (see
/// [`SqlOptions::with_overrides`]).
fn option_string(opts: &RectifyOptions, plan: &FilePlan) -> Result<String> {
    let encoding = match opts.encoding {
        Encoding::Png(PngLevel::Fast) => "format=png, png_level=fast".to_string(),
        Encoding::Png(PngLevel::Level(l)) => format!("format=png, png_level={l}"),
        Encoding::Jpeg(q) => format!("format=jpeg, jpeg_quality={q}"),
    };
    let decode = plan.decode_options(opts);
    let base = decode.base_dir.unwrap_or_default();
    let base = base.to_str().ok_or_else(|| {
        ClusterError::Model(format!(
            "{}: the folder's path is not UTF-8 (a cluster's options are text)",
            base.display()
        ))
    })?;
    Ok(format!(
        "{encoding}, max_pixels={}, batch_size={}, base_dir={}, allow_outside_paths={}, max_file_bytes={}",
        opts.max_pixels,
        opts.batch_size,
        quote_option_value(base),
        opts.allow_outside_paths,
        opts.max_file_bytes,
    ))
}

/// A batch from the cluster (the input columns, then `stn_rectified`'s struct) as the writer
/// takes it.
fn split(batch: RecordBatch, inputs: usize) -> std::result::Result<RectifiedBatch, TableError> {
    let bad = |m: String| TableError::Model(format!("the cluster's result: {m}"));
    if batch.num_columns() != inputs + 1 {
        return Err(bad(format!("{} columns where {} were expected", batch.num_columns(), inputs + 1)));
    }
    let s = batch
        .column(inputs)
        .as_struct_opt()
        .ok_or_else(|| bad(format!("stn_rectified came back as {}", batch.column(inputs).data_type())))?;
    if s.num_columns() != 3 {
        return Err(bad(format!("stn_rectified has {} fields where 3 were expected", s.num_columns())));
    }
    let added: [ArrayRef; 3] = [s.column(0).clone(), s.column(1).clone(), s.column(2).clone()];
    let errors = added[2].as_string_opt::<i32>().ok_or_else(|| bad("stn_error is not a string".into()))?;
    let failures =
        (0..errors.len()).filter(|&i| errors.is_valid(i)).map(|i| (i, errors.value(i).to_string())).collect();
    let input = RecordBatch::try_new_with_options(
        Arc::new(datafusion::arrow::datatypes::Schema::new(batch.schema().fields()[..inputs].to_vec())),
        batch.columns()[..inputs].to_vec(),
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok(RectifiedBatch { input, added, failures, timings: Timings::default() })
}

/// The session configuration of a table run: [`cluster_config`] with each file read as one
/// partition and no repartitioning, so a job returns its file's rows in the file's order.
fn table_config() -> SessionConfig {
    cluster_config()
        .set_bool("datafusion.optimizer.repartition_file_scans", false)
        .set_bool("datafusion.optimizer.enable_round_robin_repartition", false)
        .with_target_partitions(1)
}

/// What one file's job cost on the cluster, from Ballista's metrics of the query.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JobTimes {
    /// From submission to the job's start: the scheduler's planning and queueing.
    pub scheduling: Duration,
    /// The job on the executors, start to end: reading the file, the functions, and writing
    /// the results where the client fetches them from.
    pub execution: Duration,
    /// From submission to the last row received here: the above plus the Flight transfer.
    pub total: Duration,
    /// Bytes of results received here over Flight.
    pub transferred_bytes: usize,
}

impl JobTimes {
    fn of(plan: &dyn ExecutionPlan) -> JobTimes {
        let Some(m) = plan.metrics() else { return JobTimes::default() };
        let get = |name: &str| m.sum_by_name(name).map_or(0, |v| v.as_usize());
        let ms = |name: &str| Duration::from_millis(get(name) as u64);
        JobTimes {
            scheduling: ms("job_scheduling_in_ms"),
            execution: ms("job_execution_time_ms"),
            total: ms("total_query_time_ms"),
            transferred_bytes: get("transferred_bytes"),
        }
    }
}

/// One file of a cluster run: what the writer reports, and what the job cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterFileReport {
    /// The file as the local run reports it (its `io` includes waiting for the cluster).
    pub file: FileReport,
    /// The job (zero for a skipped file).
    pub job: JobTimes,
}

/// One file rectified on the cluster (one job) and written here by the table writer.
#[allow(clippy::too_many_arguments)]
fn rectify_file_on(
    rt: &tokio::runtime::Runtime,
    ctx: &SessionContext,
    cluster: &Remote,
    job_timeout: Option<Duration>,
    rectifier: &Rectifier,
    task: &FileTask,
    task_output: &Path,
    opts: &RectifyOptions,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<ClusterFileReport, Attempt> {
    let task_input = &task.input;
    let plan = FilePlan::of_task(rectifier, task, opts)?;
    let path = task_input
        .to_str()
        .ok_or_else(|| ClusterError::Model(format!("{}: the path is not UTF-8", task_input.display())))?;
    let inputs = plan.input_schema.fields().len();
    let spec = option_string(opts, &plan)?;
    let image = plan.column.field.name().clone();
    let (physical, mut stream) = rt.block_on(async {
        let df = match &task.delta {
            // A part of a Delta table: its data file read as plain Parquet by the executors,
            // the log's deletions, names and partition values applied in the plan.
            Some(d) => d
                .table
                .plain_frame(ctx, d.part)
                .await
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
            None => ctx.read_parquet(path, ParquetReadOptions::default()).await?,
        };
        let mut exprs: Vec<Expr> = df.schema().fields().iter().map(|f| ident(f.name())).collect();
        let udf = ctx.udf("stn_rectified")?;
        exprs.push(udf.call(vec![ident(image), lit(spec)]).alias("stn_rectified"));
        let df = df.select(exprs)?;
        let task_ctx = Arc::new(df.task_ctx());
        let physical = df.create_physical_plan().await?;
        let stream = execute_stream(physical.clone(), task_ctx)?;
        Ok::<_, datafusion::error::DataFusionError>((physical, stream))
    })?;
    let deadline = job_timeout.map(|t| tokio::time::Instant::now() + t);
    let timed_out = std::cell::Cell::new(false);
    let lost = std::cell::Cell::new(None);
    let mut batches = std::iter::from_fn(|| {
        if timed_out.get() {
            return None;
        }
        let next = rt.block_on(async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, stream.next()).await.ok(),
                None => Some(stream.next().await),
            }
        });
        match next {
            Some(b) => b,
            None => {
                timed_out.set(true);
                Some(Err(datafusion::error::DataFusionError::Execution("deadline".into())))
            }
        }
    })
    .map(|b| {
        let b = b.map_err(|e| {
            if lost.get().is_none() {
                lost.set(executor_lost(&e));
            }
            TableError::Model(format!("on the cluster: {e}"))
        })?;
        split(b, inputs)
    });
    let written = write_file(&plan, task_output, opts, 0, events, &mut batches);
    drop(batches);
    let config = ctx.state().config().clone();
    if written.is_ok() && !timed_out.get() {
        // Every row is here: the executors delete the job's results now.
        rt.block_on(clean_job(&cluster.url, &config, job_id(&physical).as_deref()));
    }
    if let (Err(e), Some(reason)) = (&written, lost.get()) {
        return Err(Attempt::Lost { reason, error: e.to_string() });
    }
    if timed_out.get() {
        drop(stream);
        let cancelled = rt.block_on(cancel_job(&cluster.url, &config, job_id(&physical).as_deref()));
        return Err(ClusterError::Timeout {
            what: format!("the job of {}", task_input.display()),
            seconds: job_timeout.unwrap_or_default().as_secs(),
            cancelled,
        }
        .into());
    }
    Ok(ClusterFileReport { file: written.map_err(ClusterError::from)?, job: JobTimes::of(physical.as_ref()) })
}

/// How one attempt at a file's job ended badly.
enum Attempt {
    /// An executor went away under the job: running it again may succeed.
    Lost {
        /// What was lost, in words.
        reason: &'static str,
        /// The error as the job saw it.
        error: String,
    },
    /// Anything else: the run stops.
    Failed(ClusterError),
}

impl<E: Into<ClusterError>> From<E> for Attempt {
    fn from(e: E) -> Self {
        Attempt::Failed(e.into())
    }
}

/// How a table run uses the cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobLimits {
    /// Files rectified at once (one job each).
    pub jobs: usize,
    /// How long one file's job may run before it is cancelled and the run fails (None: no
    /// limit).
    pub timeout: Option<Duration>,
    /// Times a file's job may run when an executor is lost under it (its connection breaks,
    /// or its results are gone): 1 never runs a job again. Other errors are never retried.
    pub attempts: usize,
}

/// The pause before a lost job runs again, times the retries so far.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Attempts a file's job gets by default when executors are lost (see [`JobLimits::attempts`]).
pub const DEFAULT_ATTEMPTS: usize = 3;

impl JobLimits {
    /// `jobs` at a time, no deadline, [`DEFAULT_ATTEMPTS`] attempts.
    pub fn jobs(jobs: usize) -> Self {
        JobLimits { jobs, timeout: None, attempts: DEFAULT_ATTEMPTS }
    }
}

/// Why a job's error means an executor went away under it (so running the job again on the
/// executors left can succeed), or None when the error is anything else. The error's chain of
/// causes is looked at, not its text: a shuffle or result fetch from an executor that is gone
/// (Ballista's `FetchFailed`), an executor that does not answer (gRPC `Unavailable`), and a
/// connection broken while it sent (an HTTP/2 or socket error).
pub fn executor_lost(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use std::io::ErrorKind::*;
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(b) = e.downcast_ref::<ballista_core::error::BallistaError>() {
            use ballista_core::error::BallistaError as B;
            match b {
                B::FetchFailed(..) => return Some("the executor holding its results is gone"),
                B::GrpcConnectionError(_) | B::TonicError(_) => return Some("an executor does not answer"),
                _ => {}
            }
        }
        if let Some(s) = e.downcast_ref::<tonic::Status>() {
            if s.code() == tonic::Code::Unavailable {
                return Some("an executor does not answer");
            }
        }
        if let Some(h) = e.downcast_ref::<h2::Error>() {
            if h.is_io() || h.is_go_away() || h.is_reset() {
                return Some("the connection to an executor broke");
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionRefused | ConnectionAborted | BrokenPipe | NotConnected
            ) {
                return Some("the connection to an executor broke");
            }
        }
        cause = e.source();
    }
    None
}

/// The Delta table a run writes (`opts.delta_mode`) and the outputs' schema: every input must
/// give the same (one table holds one schema), checked before anything is written.
fn open_sink(
    rectifier: &Rectifier,
    tasks: &[FileTask],
    output: &Path,
    mode: DeltaMode,
    opts: &RectifyOptions,
) -> Result<(DeltaSink, SchemaRef)> {
    let mut schema: Option<SchemaRef> = None;
    for t in tasks {
        let s = FilePlan::of_task(rectifier, t, opts)?.out_schema;
        match &schema {
            Some(first) if first.fields() != s.fields() => {
                return Err(TableError::Column {
                    path: t.input.clone(),
                    message: "has other columns than the run's first input: one Delta table holds one schema"
                        .into(),
                }
                .into())
            }
            Some(_) => {}
            None => schema = Some(s),
        }
    }
    let schema = schema
        .ok_or_else(|| TableError::Io { path: output.to_path_buf(), message: "no input files".into() })?;
    Ok((DeltaSink::open(output, mode, &schema)?, schema))
}

/// Rectifies a Parquet file, or a folder of Parquet files, on the cluster at `url`: one job
/// per file, at most `limits.jobs` at a time, each file's rows rectified by the executors and
/// written here by the same writer as the local run (`stn_table::rectify`: every input column
/// passed through, `stn_image`, `stn_theta`, `stn_error` added, one output file per input
/// file, written under a temporary name and renamed when complete; complete outputs of a
/// re-run are skipped). The input path must be readable by every executor at the same path
/// (it is made absolute here). `events` sees the progress, as in the local run. The first
/// error stops the run: files already written stay, the file in progress leaves nothing. A
/// file whose job has not finished within `limits.timeout` is an error, and its job is cancelled
/// on the cluster.
pub fn rectify_table(
    cluster: &Remote,
    rectifier: Arc<Rectifier>,
    input: &Path,
    output: &Path,
    opts: &RectifyOptions,
    limits: JobLimits,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Vec<ClusterFileReport>> {
    let JobLimits { jobs, timeout: job_timeout, attempts } = limits;
    let attempts = attempts.max(1);
    let input = if stn_table::remote::is_remote(input) {
        input.to_path_buf()
    } else {
        std::fs::canonicalize(input)
            .map_err(|e| TableError::Io { path: input.to_path_buf(), message: format!("cannot open: {e}") })?
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Model(format!("cannot start a runtime: {e}")))?;
    let config = if job_timeout.is_some() { deadline_config(table_config()) } else { table_config() };
    let ctx =
        rt.block_on(connect_with(&cluster.url, Model::loaded(rectifier.clone()), cluster.config(config)))?;
    // A table in S3: the client plans with its credentials, the executors read with theirs.
    stn_sql::store::register_for(&ctx, &input.to_string_lossy())?;
    if let Some(keys) = &opts.keys {
        // Encrypted inputs: decrypted rows cross the network only over TLS (or on loopback).
        require_private(cluster)?;
        use_keys(&ctx, keys.clone());
    }
    // The cluster first: nothing is created when it cannot be reached.
    let lineage = rectify_lineage(&rectifier, opts);
    let tasks = plan_table(&input, output, opts, &lineage)?;
    // Into a Delta table: every file's outputs a data file of it, written here, and one commit
    // when all are (as without --cluster).
    let sink = match opts.delta_mode {
        Some(mode) => Some(open_sink(&rectifier, &tasks, output, mode, opts)?),
        None => {
            for p in clean_partials(output)? {
                events(Event::PartialRemoved(&p));
            }
            None
        }
    };
    let targets: Vec<PathBuf> = tasks
        .iter()
        .map(|t| sink.as_ref().map_or_else(|| t.output.clone(), |(s, _)| s.data_file(&t.input)))
        .collect();
    let sink = sink.map(|(s, schema)| (Mutex::new(s), schema));
    events(Event::Start { files: tasks.len(), rows: tasks.iter().map(|t| t.rows).sum() });
    let queue = Mutex::new(tasks.iter().zip(&targets).enumerate().collect::<VecDeque<_>>());
    let reports = Mutex::new(Vec::new());
    let failure: Mutex<Option<ClusterError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let total = AtomicUsize::new(0);
    let events = Mutex::new(events);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(tasks.len()) {
            scope.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Some((i, (task, target))) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                    return;
                };
                // This file's rows counted in `total` so far.
                let last = std::cell::Cell::new(0usize);
                let mut forward = |e: Event<'_>| {
                    let mut ev = events.lock().unwrap_or_else(|p| p.into_inner());
                    match e {
                        Event::Rows { rows } => {
                            let (was, is) = (last.replace(rows), rows);
                            let now = if is >= was {
                                total.fetch_add(is - was, Ordering::SeqCst) + (is - was)
                            } else {
                                total.fetch_sub(was - is, Ordering::SeqCst) - (was - is)
                            };
                            ev(Event::Rows { rows: now });
                        }
                        e => ev(e),
                    }
                };
                let result = if task.complete {
                    Ok(ClusterFileReport { file: task.skipped_report(), job: JobTimes::default() })
                } else {
                    let mut attempt = 1;
                    loop {
                        let r = rectify_file_on(
                            &rt,
                            &ctx,
                            cluster,
                            job_timeout,
                            &rectifier,
                            task,
                            target,
                            opts,
                            &mut forward,
                        );
                        match r {
                            Ok(r) => break Ok(r),
                            Err(Attempt::Failed(e)) => break Err(e),
                            Err(Attempt::Lost { error, .. }) if attempt >= attempts => {
                                break Err(ClusterError::Model(format!(
                                    "{}: the job failed {attempt} time(s) as executors were lost; the last time: {error}",
                                    task.input.display()
                                )))
                            }
                            Err(Attempt::Lost { reason, .. }) => {
                                attempt += 1;
                                // The lost attempt's rows leave the progress; the scheduler
                                // gets a moment to see the executor gone.
                                forward(Event::Rows { rows: 0 });
                                forward(Event::Retry { file: &task.input, attempt, attempts, reason });
                                std::thread::sleep(RETRY_PAUSE * (attempt as u32 - 1));
                            }
                        }
                    }
                };
                // A Delta table's data file, recorded for the commit.
                let result = result.and_then(|r| match &sink {
                    Some((s, _)) => {
                        s.lock().unwrap_or_else(|p| p.into_inner()).add(target, r.file.rows)?;
                        Ok(r)
                    }
                    None => Ok(r),
                });
                match result {
                    Ok(r) => {
                        forward(Event::FileDone(&r.file));
                        if r.file.skipped {
                            forward(Event::Rows { rows: r.file.rows });
                        }
                        reports.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
                    }
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    let failure = failure.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some((s, schema)) = sink {
        let s = s.into_inner().unwrap_or_else(|p| p.into_inner());
        match &failure {
            // Nothing committed, the data files written removed.
            Some(_) => s.abandon(),
            None => {
                s.commit(&schema, &lineage.to_json())?;
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
    reports.sort_by_key(|(i, _)| *i);
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::executor_lost;
    use ballista_core::error::BallistaError;
    use datafusion::arrow::error::ArrowError;
    use datafusion::error::DataFusionError;
    use std::io::{Error, ErrorKind};

    #[test]
    fn lost_executors_are_told_from_other_errors_by_their_causes() {
        let fetch =
            DataFusionError::External(Box::new(BallistaError::FetchFailed("e1".into(), 0, 3, "gone".into())));
        assert!(executor_lost(&fetch).is_some());
        // A gRPC status the way a Flight stream hands it over, under an Arrow error.
        let unavailable = DataFusionError::ArrowError(
            Box::new(ArrowError::ExternalError(Box::new(tonic::Status::unavailable("tcp connect error")))),
            None,
        );
        assert!(executor_lost(&unavailable).is_some());
        let reset = tonic::Status::from_error(Box::new(Error::from(ErrorKind::ConnectionReset)));
        assert!(executor_lost(&DataFusionError::External(Box::new(reset))).is_some());
        let shared = DataFusionError::Shared(std::sync::Arc::new(fetch));
        assert!(executor_lost(&shared).is_some(), "through a shared error");

        // Errors of the job itself are not retried, whatever their words say.
        for e in [
            DataFusionError::Execution("h2 protocol error: connection reset, broken pipe".into()),
            DataFusionError::External(Box::new(BallistaError::General("Executor lost".into()))),
            DataFusionError::External(Box::new(tonic::Status::invalid_argument("bad option"))),
            DataFusionError::External(Box::new(Error::from(ErrorKind::NotFound))),
            DataFusionError::ArrowError(Box::new(ArrowError::ComputeError("overflow".into())), None),
        ] {
            assert!(executor_lost(&e).is_none(), "{e}");
        }
    }
}
