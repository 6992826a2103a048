use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use furrow_netd::daemon::Daemon;
use furrow_netd::options::{LogFormat, Options};
use tokio::signal::unix::{signal, SignalKind};

fn main() {
    let opts = Options::parse();
    init_logging(&opts);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("netd")
        .build()
        .expect("building the tokio runtime");
    if let Err(e) = rt.block_on(run(opts)) {
        tracing::error!(error = format!("{e:#}"), "netd failed");
        eprintln!("netd: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(opts: &Options) {
    let filter = tracing_subscriber::EnvFilter::try_new(&opts.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match opts.log_format {
        LogFormat::Json => b.json().flatten_event(true).init(),
        LogFormat::Text => b.init(),
    }
}

async fn run(opts: Options) -> anyhow::Result<()> {
    let cfg = opts.resolve()?;
    tracing::info!(
        node = %cfg.node,
        instance = %cfg.instance,
        socket = %cfg.socket.display(),
        state = %cfg.state_dir.display(),
        bpf = %cfg.bpf_dir.display(),
        nft_table = %cfg.nft_table,
        "netd starting"
    );
    // Bind before the (possibly slow) reconcile so a second netd for the
    // same instance is refused at once, but serve only once reconciled.
    let listener = furrow_netd::api::bind(&cfg.socket, cfg.socket_dir_owned, cfg.api_read_group)
        .with_context(|| format!("binding {}", cfg.socket.display()))?;
    let access = furrow_netd::api_access::Access::new(cfg.api_read_group);
    if let Some(g) = cfg.api_read_group {
        tracing::info!(group = g, "API: read-only views for the --api-read-group");
    }
    let socket = cfg.socket.clone();
    let metrics_listen = cfg.metrics_listen;
    let daemon: Arc<Daemon> = Daemon::start(cfg).await?;
    daemon.spawn_watchers();
    let app = furrow_netd::api::router(daemon.clone(), access);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = metrics_listen {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics listener {addr}"))?;
        let metrics_app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(
                    |axum::extract::State(d): axum::extract::State<Arc<Daemon>>| async move {
                        d.metrics_text().await
                    },
                ),
            )
            .with_state(daemon.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(tcp, metrics_app)
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await;
        });
    }

    let d2 = daemon.clone();
    tokio::spawn(async move {
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config directory");
            d2.load_config_dir().await;
            if let Err(e) = d2.reconcile("sighup").await {
                tracing::error!(error = %e, "reconcile after reload failed");
            }
        }
    });

    tracing::info!(socket = %socket.display(), "netd ready");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let d3 = daemon.clone();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        // VIPs move to another node at once rather than after the
        // takeover time.
        d3.vip.shutdown().await;
        let _ = stop_tx.send(true);
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<furrow_netd::api_access::Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    // Ports, maps, pinned links and NAT rules stay: pods keep their
    // connectivity while netd is down, and the next start adopts them.
    let _ = std::fs::remove_file(&socket);
    tracing::info!("netd stopped; datapath left in place for the next start");
    Ok(())
}
