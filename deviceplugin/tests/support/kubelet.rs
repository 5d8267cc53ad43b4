//! The kubelet's side of registration, for the tests: a Registration
//! server on `kubelet.sock` in a folder of the test's, as a kubelet serves
//! it (device plugin API v1beta1). The kubelet is a stand-in: none can be
//! installed on the test host. Shared by the plugin's tests and the
//! containerd end-to-end test.

use std::path::Path;
use std::time::Duration;

use gpuwarden_device_plugin::api::registration_server::{Registration, RegistrationServer};
use gpuwarden_device_plugin::api::{Empty, RegisterRequest};
use tokio::sync::mpsc;

pub struct FakeKubelet {
    registered: mpsc::UnboundedReceiver<RegisterRequest>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Registrar(mpsc::UnboundedSender<RegisterRequest>);

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(&self, r: tonic::Request<RegisterRequest>) -> Result<tonic::Response<Empty>, tonic::Status> {
        let r = r.into_inner();
        if r.version != "v1beta1" {
            return Err(tonic::Status::invalid_argument(format!("unsupported version {}", r.version)));
        }
        let _ = self.0.send(r);
        Ok(tonic::Response::new(Empty {}))
    }
}

impl FakeKubelet {
    /// Listens on `dir/kubelet.sock`, made anew as a restarted kubelet makes it.
    pub fn start(dir: &Path) -> FakeKubelet {
        let path = dir.join("kubelet.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (tx, registered) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(Registrar(tx)))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeKubelet { registered, stop: Some(stop) }
    }

    /// The registrations within `within`, by resource name.
    pub async fn registrations(&mut self, n: usize, within: Duration) -> Vec<RegisterRequest> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.registered.recv()).await {
                Ok(Some(r)) => out.push(r),
                _ => panic!("{} of {n} registrations within {within:?}: {out:?}", out.len()),
            }
        }
        out.sort_by(|a, b| a.resource_name.cmp(&b.resource_name));
        out
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

