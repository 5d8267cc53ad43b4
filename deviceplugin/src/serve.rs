//! Serving the kubelet: one socket per profile in its device plugin folder,
//! each registered through `kubelet.sock`, all served again and registered
//! again when the kubelet restarts (it then removes every socket in the
//! folder and makes `kubelet.sock` anew).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::device_plugin_server::DevicePluginServer;
use crate::api::registration_client::RegistrationClient;
use crate::api::RegisterRequest;
use crate::node::{Node, Slots};
use crate::service::{options, ProfilePlugin};
use crate::slots::resource_name;

/// How long the kubelet may take to answer a registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Settings {
    pub dir: PathBuf,
    pub kind: String,
    pub poll: Duration,
    /// The profiles offered (all of config.toml's when empty).
    pub profiles: Vec<String>,
}

/// The socket of profile `profile`, as the plugin names it in `dir`.
pub fn endpoint(profile: &str) -> String {
    format!("gpuwarden-{profile}.sock")
}

/// `kubelet.sock`'s identity: a new one means a restarted kubelet.
fn kubelet_identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir.join(crate::KUBELET_SOCKET)).ok().map(|m| (m.dev(), m.ino()))
}

/// Serves until SIGTERM or SIGINT; `Err` for what cannot be mended by waiting.
pub async fn run(node: Node, s: Settings) -> Result<(), String> {
    let profiles: Vec<String> = if s.profiles.is_empty() { node.config.profiles.keys().map(|p| p.as_str().to_string()).collect() } else { s.profiles.clone() };
    for p in &profiles {
        if node.config.profile(p).is_none() {
            return Err(format!("profile {p:?} is not in config.toml: known are {}", node.config.profiles.keys().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")));
        }
    }
    let gpus = node.gpus;
    let node = Arc::new(node);
    let (tx, rx) = tokio::sync::watch::channel(node.look());
    tracing::info!("slots: {}", crate::node::summary(&rx.borrow()));
    tokio::spawn(node.clone().watch(tx, s.poll));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    loop {
        // Wait for the kubelet.
        let kubelet = loop {
            if let Some(id) = kubelet_identity(&s.dir) {
                break Some(id);
            }
            if !look_again(&mut term).await {
                break None;
            }
        };
        let Some(kubelet) = kubelet else {
            cleanup(&s.dir, &profiles);
            return Ok(());
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut servers = Vec::new();
        for p in &profiles {
            servers.push(serve_one(&s, p, gpus, rx.clone(), stopped.clone())?);
        }
        for p in &profiles {
            // A kubelet that takes the connection and never answers must not hold the plugin.
            let registered = tokio::time::timeout(REGISTER_TIMEOUT, register(&s.dir, p)).await.unwrap_or_else(|_| Err(format!("no answer within {}s", REGISTER_TIMEOUT.as_secs())));
            if let Err(e) = registered {
                tracing::error!("registering {} with the kubelet: {e}; again when the kubelet restarts", resource_name(p));
            }
        }
        // Watch for the kubelet's restart (or our sockets removed under us).
        let restart = loop {
            if !look_again(&mut term).await {
                break false;
            }
            let ours_gone = profiles.iter().any(|p| !s.dir.join(endpoint(p)).exists());
            if ours_gone || kubelet_identity(&s.dir) != Some(kubelet) {
                tracing::warn!("the kubelet restarted (its socket is new or ours are gone): serving and registering again");
                break true;
            }
        };
        let _ = stop.send(true);
        for server in servers {
            let _ = server.await;
        }
        if !restart {
            cleanup(&s.dir, &profiles);
            return Ok(());
        }
    }
}

/// Waits half a second before the next look at the kubelet's folder;
/// `false` when SIGTERM or SIGINT came first.
async fn look_again(term: &mut tokio::signal::unix::Signal) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(500)) => true,
        _ = term.recv() => false,
        _ = tokio::signal::ctrl_c() => false,
    }
}

fn cleanup(dir: &Path, profiles: &[String]) {
    for p in profiles {
        let _ = std::fs::remove_file(dir.join(endpoint(p)));
    }
}

fn serve_one(s: &Settings, profile: &str, gpus: usize, slots: tokio::sync::watch::Receiver<Slots>, mut stopped: tokio::sync::watch::Receiver<bool>) -> Result<tokio::task::JoinHandle<()>, String> {
    let path = s.dir.join(endpoint(profile));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let plugin = ProfilePlugin { profile: profile.to_string(), kind: s.kind.clone(), gpus, slots };
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = tonic::transport::Server::builder().add_service(DevicePluginServer::new(plugin)).serve_with_incoming_shutdown(incoming, shutdown).await {
            tracing::error!("serving {}: {e}", path.display());
        }
    }))
}

async fn register(dir: &Path, profile: &str) -> Result<(), String> {
    let channel = crate::unix_channel(dir.join(crate::KUBELET_SOCKET)).await.map_err(|e| format!("cannot reach {}: {e}", dir.join(crate::KUBELET_SOCKET).display()))?;
    let request = RegisterRequest { version: crate::API_VERSION.into(), endpoint: endpoint(profile), resource_name: resource_name(profile), options: Some(options()) };
    RegistrationClient::new(channel).register(request).await.map_err(|e| e.message().to_string())?;
    tracing::info!("registered {} at {}", resource_name(profile), endpoint(profile));
    Ok(())
}
