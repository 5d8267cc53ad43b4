//! One profile's DevicePlugin service: its slots, watched; its CDI device
//! for what the kubelet allocates; slots on one GPU preferred.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::api::device_plugin_server::DevicePlugin;
use crate::api::*;
use crate::node::Slots;
use crate::slots::{cdi_device, preferred, resource_name, HEALTHY, UNHEALTHY};

pub struct ProfilePlugin {
    pub profile: String,
    /// The CDI kind of gpuwarden's spec (`nvidia.com/gpu`).
    pub kind: String,
    pub gpus: usize,
    pub slots: tokio::sync::watch::Receiver<Slots>,
}

impl ProfilePlugin {
    fn devices(&self, s: &Slots) -> Vec<Device> {
        s.get(&self.profile)
            .into_iter()
            .flatten()
            .map(|slot| Device { id: slot.id.clone(), health: if slot.healthy { HEALTHY } else { UNHEALTHY }.into(), topology: None })
            .collect()
    }
}

pub fn options() -> DevicePluginOptions {
    DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for ProfilePlugin {
    async fn get_device_plugin_options(&self, _: Request<Empty>) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = DeviceStream;

    /// The slots now, then again at every change, until the kubelet hangs up.
    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut slots = self.slots.clone();
        let me = ProfilePlugin { profile: self.profile.clone(), kind: self.kind.clone(), gpus: self.gpus, slots: self.slots.clone() };
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let devices = me.devices(&slots.borrow_and_update());
                if last.as_ref() != Some(&devices) {
                    if tx.send(Ok(ListAndWatchResponse { devices: devices.clone() })).await.is_err() {
                        return;
                    }
                    last = Some(devices);
                }
                tokio::select! {
                    changed = slots.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(&self, r: Request<PreferredAllocationRequest>) -> Result<Response<PreferredAllocationResponse>, Status> {
        let container_responses = r
            .into_inner()
            .container_requests
            .iter()
            .map(|c| ContainerPreferredAllocationResponse {
                device_i_ds: preferred(&c.available_device_i_ds, &c.must_include_device_i_ds, usize::try_from(c.allocation_size).unwrap_or(0)),
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse { container_responses }))
    }

    /// The profile's CDI device on the slot's GPU: containerd (or CRI-O)
    /// applies it, and gpuwarden's admission on the node decides, as for
    /// Podman. Nothing else is handed over: the spec carries it all.
    async fn allocate(&self, r: Request<AllocateRequest>) -> Result<Response<AllocateResponse>, Status> {
        let mut container_responses = Vec::new();
        for c in r.into_inner().container_requests {
            let name = cdi_device(&self.kind, &self.profile, self.gpus, &c.devices_i_ds).map_err(Status::invalid_argument)?;
            tracing::info!("{} allocates {:?}: {name}", resource_name(&self.profile), c.devices_i_ds);
            container_responses.push(ContainerAllocateResponse { cdi_devices: vec![CdiDevice { name }], ..Default::default() });
        }
        Ok(Response::new(AllocateResponse { container_responses }))
    }

    async fn pre_start_container(&self, _: Request<PreStartContainerRequest>) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
