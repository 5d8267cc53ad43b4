//! `gpuwarden-device-plugin`: gpuwarden's profiles as Kubernetes resources
//! (`gpuwarden.io/comfyui`), counted from the node's budget, through the
//! kubelet's device plugin API v1beta1. The scheduler sees what fits now;
//! the node's admission still decides, and refuses what a stale count let
//! through.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod api {
    tonic::include_proto!("v1beta1");
}
pub mod args;
pub mod node;
pub mod serve;
pub mod service;
pub mod slots;

/// The API version the plugin registers with.
pub const API_VERSION: &str = "v1beta1";
/// The kubelet's registration socket, in its device plugin folder.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// Where the kubelet looks for device plugins.
pub const DEFAULT_DIR: &str = "/var/lib/kubelet/device-plugins";

/// A gRPC channel over a unix socket (tonic dials URIs; the path is the address).
pub async fn unix_channel(path: std::path::PathBuf) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
}
