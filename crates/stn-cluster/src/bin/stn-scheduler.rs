//! `stn-scheduler`: Ballista's scheduler (the stock program and flags) with the image
//! functions registered on its session, for a model given by `--model RUN_DIR`. Binds to
//! 127.0.0.1 unless `--bind-host` says otherwise; with `--tls-cert`, `--tls-key` and `--tls-ca`
//! its port (gRPC, REST, Flight SQL) speaks mutual TLS only (see `stn_cluster::tls`).
//!
//! Example: stn-scheduler --model /shared/runs/rts-st --bind-port 50050

use std::process::ExitCode;
use std::sync::Arc;

use ballista_core::object_store::{session_config_with_s3_support, session_state_with_s3_support};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{Config, SchedulerConfig};
use ballista_scheduler::scheduler_process::{create_scheduler, start_server};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use stn_cluster::server::{init_logging, scheduler_session, start_up, SchedulerArgs};
use stn_cluster::tls::{self, ClusterTls};

fn main() -> ExitCode {
    let args = SchedulerArgs::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    tls::install_provider();
    let tls = match args.tls.load() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("stn-scheduler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let model = match start_up(
        "stn-scheduler",
        &args.model,
        &args.ballista.bind_host,
        tls.is_some(),
        args.insecure,
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // As Ballista's own scheduler: large stacks for deep plans.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .enable_time()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stn-scheduler: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.ballista, model, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stn-scheduler: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    opt: Config,
    model: stn_sql::Model,
    tls: Option<ClusterTls>,
) -> ballista_core::error::Result<()> {
    let prefix = format!("scheduler_{}_{}_{}", opt.namespace, opt.external_host, opt.bind_port);
    init_logging(
        &opt.log_level_setting,
        opt.print_thread_info,
        opt.log_dir.as_deref(),
        opt.log_rotation_policy,
        &prefix,
    );
    let addr =
        format!("{}:{}", opt.bind_host, opt.bind_port).parse().map_err(|e: std::net::AddrParseError| {
            ballista_core::error::BallistaError::Configuration(format!("--bind-host/--bind-port: {e}"))
        })?;
    let config: SchedulerConfig = opt.try_into()?;
    let config = config
        // Jobs' encryption settings (key IDs and flags) are registered, so that they travel.
        .with_override_config_producer(Arc::new(|| {
            stn_sql::crypto::with_settings(session_config_with_s3_support())
        }))
        .with_override_session_builder(scheduler_session(model, session_state_with_s3_support));
    let Some(tls) = tls else {
        let cluster = BallistaCluster::new_from_config(&config).await?;
        return start_server(cluster, addr, Arc::new(config)).await;
    };
    // Its connections to executors (the Flight proxy, Flight SQL's results) over TLS too.
    let config = config.with_use_tls(true).with_override_create_grpc_client_endpoint(tls.endpoint_override());
    config.validate()?;
    let cluster = BallistaCluster::new_from_config(&config).await?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config)).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    log::info!("stn-scheduler listening with mutual TLS on {addr}");
    tls::serve_scheduler(listener, scheduler, &tls).await
}
