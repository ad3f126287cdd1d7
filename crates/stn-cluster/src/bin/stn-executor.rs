//! `stn-executor`: Ballista's executor (the stock program and flags) with the image functions
//! added to its function registry (Ballista's default registry, so every built-in stays), the
//! model loaded from `--model RUN_DIR` when a task first needs it. Binds to 127.0.0.1 unless
//! `--bind-host` says otherwise; with `--tls-cert`, `--tls-key` and `--tls-ca` its Flight port and
//! every connection it opens speak mutual TLS only (see `stn_cluster::tls`).
//!
//! Example: stn-executor --model /shared/runs/rts-st --scheduler-host 127.0.0.1 --scheduler-port 50050

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use ballista_core::error::BallistaError;
use ballista_core::object_store::{runtime_env_with_s3_support, session_config_with_s3_support};
use ballista_executor::config::Config;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_executor::health::spawn_health_server;
use stn_cluster::server::{executor_registry, init_logging, start_up, ExecutorArgs, ProtectingEngine};
use stn_cluster::tls::{self, ClusterTls};
use stn_sql::crypto::with_settings;
use stn_table::crypto::Keys;

#[tokio::main]
async fn main() -> ExitCode {
    // Tasks run the model: keep freed memory instead of paging it in again for every batch.
    stn_kernels::alloc::keep_freed_memory();
    let args = ExecutorArgs::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    if let Some(m) = args.max_memory {
        if let Err(e) = stn_table::memory::set_memory_budget(m) {
            eprintln!("stn-executor: --max-memory: {e}");
            return ExitCode::FAILURE;
        }
    }
    tls::install_provider();
    let keys = match args.keys.keys(None) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("stn-executor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match args.tls.load() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("stn-executor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let model =
        match start_up("stn-executor", &args.model, &args.ballista.bind_host, tls.is_some(), args.insecure) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
    match run(args.ballista, model, tls, keys).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stn-executor: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    opt: Config,
    model: stn_sql::Model,
    tls: Option<ClusterTls>,
    keys: Option<Keys>,
) -> ballista_core::error::Result<()> {
    // Under TLS the health probes (plain HTTP, no data) answer on this machine only.
    let bind_host = if tls.is_some() { "127.0.0.1".to_string() } else { opt.bind_host.clone() };
    let health_port = opt.bind_health_port;
    let mut config: ExecutorProcessConfig = opt.try_into()?;
    // Jobs' encryption settings (key IDs and flags) are registered, so that they arrive.
    config.override_config_producer = Some(Arc::new(|| with_settings(session_config_with_s3_support())));
    config.override_runtime_producer = Some(Arc::new(runtime_env_with_s3_support));
    if let Some(keys) = &keys {
        // Parquet outputs are encrypted through the key factory of the task's runtime.
        let factory = stn_sql::crypto::factory(keys.clone());
        config.override_runtime_producer = Some(Arc::new(move |c| {
            let env = runtime_env_with_s3_support(c)?;
            env.register_parquet_encryption_factory(stn_sql::crypto::FACTORY_ID, factory.clone());
            Ok(env)
        }));
    }
    config.override_execution_engine = Some(Arc::new(ProtectingEngine::new(keys)));
    if let Some(tls) = tls {
        // Its Flight port, its connection to the scheduler and its shuffle reads, over TLS.
        let session = tls.clone();
        config.override_config_producer =
            Some(Arc::new(move || session.session(with_settings(session_config_with_s3_support()))));
        config.override_create_grpc_client_endpoint = Some(tls.endpoint_override());
        config.override_arrow_flight_service = Some(tls::flight_server(
            tls,
            config.grpc_max_encoding_message_size as usize,
            config.grpc_max_decoding_message_size as usize,
        ));
    }
    config.override_function_registry = Some(executor_registry(model));

    init_logging(
        &config.special_mod_log_level,
        config.print_thread_info,
        config.log_dir.as_deref(),
        config.log_rotation_policy,
        &config.log_file_name_prefix(),
    );

    // The health probes (/healthz, /readyz), as Ballista's own executor serves them.
    let health_addr: SocketAddr = format!("{bind_host}:{health_port}")
        .parse()
        .map_err(|e| BallistaError::General(format!("invalid --bind-health-port address: {e}")))?;
    let (health_stop, health_stopped) = tokio::sync::oneshot::channel();
    let health = spawn_health_server(health_addr, config.health.clone(), health_stopped);
    let result = start_executor_process(Arc::new(config)).await;
    let _ = health_stop.send(());
    if let Err(e) = health.await {
        log::warn!("health server task join error: {e}");
    }
    result
}
