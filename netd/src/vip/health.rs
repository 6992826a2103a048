//! VIP health checks: a TCP connect, an HTTP GET answered 2xx, or a
//! command exiting 0, each within its timeout. A node counts as healthy
//! for a VIP after `failureThreshold` successes in a row and unhealthy
//! after as many failures; the holder steps down when it turns unhealthy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use furrow_api::resource::{parse_http_url, HealthCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Default)]
pub struct Health {
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Health {
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("poisoned").clone()
    }

    /// A VIP without a check is always healthy.
    pub fn always() -> Arc<Health> {
        let h = Health::default();
        h.healthy.store(true, Ordering::Relaxed);
        Arc::new(h)
    }
}

/// Runs `check` until the returned handle is dropped (aborted).
pub fn spawn(
    vip: String,
    check: HealthCheck,
    health: Arc<Health>,
    election: Arc<super::election::Election>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_millis(u64::from(check.interval_ms));
        let timeout = Duration::from_millis(u64::from(check.timeout_ms));
        let threshold = check.failure_threshold.max(1);
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let r = match tokio::time::timeout(timeout, run(&check)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            let was = health.healthy();
            match r {
                Ok(()) => {
                    ok_run += 1;
                    fail_run = 0;
                    *health.last_error.lock().expect("poisoned") = None;
                    if !was && ok_run >= threshold {
                        health.healthy.store(true, Ordering::Relaxed);
                        tracing::info!(vip = %vip, "VIP health check passes");
                        election.changed.notify_waiters();
                    }
                }
                Err(e) => {
                    fail_run += 1;
                    ok_run = 0;
                    *health.last_error.lock().expect("poisoned") = Some(e.clone());
                    if was && fail_run >= threshold {
                        health.healthy.store(false, Ordering::Relaxed);
                        tracing::warn!(vip = %vip, error = %e, "VIP health check fails");
                        election.changed.notify_waiters();
                    }
                }
            }
        }
    })
}

async fn run(check: &HealthCheck) -> Result<(), String> {
    if let Some(t) = &check.tcp {
        let addr: std::net::SocketAddr = t.parse().map_err(|_| format!("bad address {t}"))?;
        tokio::net::TcpStream::connect(addr)
            .await
            .map(|_| ())
            .map_err(|e| format!("tcp {addr}: {e}"))
    } else if let Some(u) = &check.http {
        let (addr, path) = parse_http_url(u).ok_or_else(|| format!("bad URL {u}"))?;
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("http {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: furrow-netd\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("http {addr}: {e}"))?;
        let mut head = [0u8; 32];
        let n = s
            .read(&mut head)
            .await
            .map_err(|e| format!("http {addr}: {e}"))?;
        let line = String::from_utf8_lossy(&head[..n]);
        let code = line.split_whitespace().nth(1).unwrap_or("");
        if code.starts_with('2') && code.len() == 3 {
            Ok(())
        } else {
            Err(format!("http {u}: status {code:?}"))
        }
    } else if let Some((prog, args)) = check.command.split_first() {
        let status = tokio::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| format!("command {prog}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("command {prog}: {status}"))
        }
    } else {
        Ok(())
    }
}
