//! Docker Swarm: a service per pool, scaled by its replica count; its running tasks are the replicas.
//!
//! A counting runtime ([`Listing::desired`]): the control loop sets the
//! service's `Replicas` ([`Runtime::scale`]) and Swarm picks which tasks
//! start or stop, places them on its nodes and replaces dead ones. The loop
//! follows the tasks it lists: a new running task joins the pool after
//! `/ready`, a task that leaves (scaled away, dead, replaced) leaves the pool
//! and is drained there, while the worker finishes its own requests between
//! SIGTERM and SIGKILL (`scaler.swarm.stop_grace_period`).
//!
//! - **Which service.** The one carrying the three labels of the container
//!   runtime (`gantry.managed=true`, `gantry.deployment`, `gantry.pool`);
//!   gantry creates it, named `gantry-<pool>-<8 hex of the deployment>`, on
//!   the first scale-up. A service of one's own is adopted by giving it the
//!   labels (`docker service update --label-add ...`). Nothing else is read
//!   or written.
//! - **Scaling is a compare-and-set.** Inspect, clone the whole spec, set
//!   `Mode.Replicated.Replicas`, update with the version index read (as raw
//!   JSON: every field the engine returned goes back unchanged): when
//!   someone changed the service in between, the engine refuses, and the
//!   loop re-reads and decides again ([`RuntimeError::Conflict`]); it never
//!   writes over another's change. (Sending only the mode would wipe the
//!   task template.)
//! - **Where the proxy reaches a task.** With `publish` (the default), its
//!   worker port is published in host mode (a port the engine picks on the
//!   task's node), and traffic goes to the node's address and that port: the
//!   proxy may run on any host that reaches the nodes. Without it, the proxy
//!   runs as a service on the same overlay network, and the tasks are the
//!   addresses Swarm's DNS gives for `tasks.<service>` (its running tasks;
//!   a replica's id is `<service>@<address>`). The tasks run hardened like the containers of
//!   [`super::container`]: non-root, read-only, no capabilities, limited.
//! - **What is not here.** Warm spares (Swarm has no stopped-but-ready task),
//!   a choice of which task a scale-down removes, and death reasons (a dead
//!   task is simply gone from the listing; `docker service ps` has its error).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, HealthConfig, Limit, Mount, MountTmpfsOptions, MountType,
    NetworkAttachmentConfig, NetworkCreateRequest, Service, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecPrivileges, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListServicesOptionsBuilder, ListTasksOptionsBuilder};
use bollard::Docker;
use tokio::sync::broadcast;

use super::container::{self, filters, labels};
use super::docker::{container_usage, Engine};
use super::{
    http_ready, probe_client, Death, Listing, Replica, ReplicaSpec, Runtime, RuntimeError, Usage,
};
use crate::client::HttpClient;
use crate::scaler::config::{DockerConfig, SwarmConfig};

/// Longest Swarm service name.
const NAME_MAX: usize = 63;
/// How often Swarm runs the image's health check in a task.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// How often while the task starts (within the image's start period).
const HEALTH_START_INTERVAL: Duration = Duration::from_millis(500);

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The Swarm runtime.
pub struct SwarmRuntime {
    /// Image, port, command, environment and user of the tasks.
    task: DockerConfig,
    config: SwarmConfig,
    deployment: String,
    engine: Engine,
    network_ready: tokio::sync::Mutex<bool>,
    /// Address of each node, by node id.
    nodes: tokio::sync::Mutex<HashMap<String, IpAddr>>,
    /// Container id of each listed task, by pool, then task id (for stats
    /// on this node); each listing of a pool replaces that pool's.
    containers: Mutex<HashMap<String, HashMap<String, String>>>,
    /// CPU limit of the tasks, cores, by pool (from the service's spec).
    cpus: Mutex<HashMap<String, f64>>,
    /// Never sent to: a dead task is found gone from the listing.
    deaths: broadcast::Sender<Death>,
    client: HttpClient,
}

/// `gantry-<pool>-<8 hex of blake3(deployment)>`: readable in `docker
/// service ls`, apart for two deployments, short enough for most pools.
pub fn service_name(pool: &str, deployment: &str) -> String {
    let hash = blake3::hash(deployment.as_bytes()).to_hex();
    format!("gantry-{pool}-{}", &hash[..8])
}

/// The replica count of a replicated service's spec.
fn replicas(spec: &ServiceSpec) -> Option<u32> {
    let n = spec.mode.as_ref()?.replicated.as_ref()?.replicas?;
    u32::try_from(n).ok()
}

/// The spec of a new service for `spec.pool` with `replicas` tasks.
pub fn service_spec(
    task: &DockerConfig,
    config: &SwarmConfig,
    deployment: &str,
    spec: &ReplicaSpec,
    replicas: u32,
) -> ServiceSpec {
    let env: Vec<String> = task.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let memory = (spec.memory_mib * 1024 * 1024) as i64;
    let (tmpfs, tmpfs_options) = container::TMPFS;
    let size = tmpfs_options
        .split(',')
        .find_map(|o| o.strip_prefix("size="))
        .and_then(|s| s.strip_suffix('m'))
        .and_then(|mib| mib.parse::<i64>().ok())
        .map(|mib| mib << 20);
    ServiceSpec {
        name: Some(service_name(&spec.pool, deployment)),
        labels: Some(labels(deployment, &spec.pool)),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(task.image.clone()),
                args: task.cmd.clone(),
                env: (!env.is_empty()).then_some(env),
                user: Some(task.user.clone()),
                labels: Some(labels(deployment, &spec.pool)),
                read_only: Some(true),
                mounts: Some(vec![Mount {
                    target: Some(tmpfs.into()),
                    typ: Some(MountType::TMPFS),
                    tmpfs_options: Some(MountTmpfsOptions {
                        size_bytes: size,
                        options: Some(vec![
                            vec!["noexec".into()],
                            vec!["nosuid".into()],
                            vec!["nodev".into()],
                        ]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                // The image's health check (the worker image has one), probed
                // every 2 s from the start: Swarm counts a task running only
                // once it is healthy, and replaces one that turns unhealthy.
                health_check: Some(HealthConfig {
                    interval: Some(nanos(HEALTH_INTERVAL)),
                    start_interval: Some(nanos(HEALTH_START_INTERVAL)),
                    ..Default::default()
                }),
                stop_signal: Some("SIGTERM".into()),
                stop_grace_period: Some(nanos(config.stop_grace_period)),
                capability_drop: Some(vec!["ALL".into()]),
                privileges: Some(TaskSpecContainerSpecPrivileges {
                    no_new_privileges: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
                    memory_bytes: Some(memory),
                    pids: Some(i64::from(spec.pids)),
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(nanos(Duration::from_secs(1))),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(config.network.clone()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(replicas)),
            }),
            ..Default::default()
        }),
        endpoint_spec: config.publish.then(|| EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(task.port)),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The published host port of `task`'s worker port `port`, if it has one yet.
fn published_port(task: &Task, port: u16) -> Option<u16> {
    let ports = task.status.as_ref()?.port_status.as_ref()?.ports.as_ref()?;
    ports
        .iter()
        .find(|p| p.target_port == Some(i64::from(port)))
        .and_then(|p| u16::try_from(p.published_port?).ok())
        .filter(|p| *p != 0)
}

/// The Docker socket: `DOCKER_HOST` when it is `unix://<path>`, else the
/// default `/var/run/docker.sock` (what bollard connects to as well).
fn socket() -> Result<std::path::PathBuf, RuntimeError> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => Ok(h.trim_start_matches("unix://").into()),
        Ok(h) if !h.is_empty() => Err(RuntimeError::Other(format!(
            "the swarm runtime reaches the engine through its Unix socket, not DOCKER_HOST={h}"
        ))),
        _ => Ok("/var/run/docker.sock".into()),
    }
}

/// One call to the engine's API, its body passed through untouched: the
/// status and the body of the answer.
async fn engine_call(
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, hyper::body::Bytes), RuntimeError> {
    use http_body_util::{BodyExt, Full};
    use hyperlocal::UnixClientExt;
    let client: hyper_util::client::legacy::Client<
        hyperlocal::UnixConnector,
        Full<hyper::body::Bytes>,
    > = hyper_util::client::legacy::Client::unix();
    let uri: hyper::Uri = hyperlocal::Uri::new(socket()?, path).into();
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(body.unwrap_or_default().into()))
        .map_err(|e| RuntimeError::Other(e.to_string()))?;
    let call = async {
        let res = client
            .request(req)
            .await
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .map_err(|_| RuntimeError::Unreachable(format!("{path}: no answer within 30s")))?
}

/// Service `id` as the engine returns it, every field kept (bollard's types
/// drop the fields they do not know, and one they misname: the
/// `Healthcheck` of a task's container spec).
pub async fn read_service(id: &str) -> Result<serde_json::Value, RuntimeError> {
    let (status, body) = engine_call(hyper::Method::GET, &format!("/services/{id}"), None).await?;
    if status != 200 {
        return Err(RuntimeError::Other(format!(
            "inspecting service {id}: {status} {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    serde_json::from_slice(&body).map_err(|e| RuntimeError::Other(format!("service {id}: {e}")))
}

/// Sets the replica count of `service` as [`read_service`] read it: its
/// whole spec sent back with only `Mode.Replicated.Replicas` changed, with
/// the version index read. [`RuntimeError::Conflict`] when the service
/// changed since. A typed round trip would lose the fields its types do not
/// carry, and a changed task template restarts every task.
pub async fn update_replicas(
    mut service: serde_json::Value,
    pool: &str,
    to: u32,
) -> Result<(), RuntimeError> {
    let id = service["ID"].as_str().unwrap_or_default().to_string();
    let version = service["Version"]["Index"].as_u64();
    let replicas = service
        .pointer_mut("/Spec/Mode/Replicated")
        .and_then(|r| r.as_object_mut());
    let (false, Some(version), Some(replicated)) = (id.is_empty(), version, replicas) else {
        return Err(RuntimeError::Other(format!(
            "the service of pool {pool} is not a replicated service with an id and a version"
        )));
    };
    replicated.insert("Replicas".into(), serde_json::Value::from(to));
    let spec =
        serde_json::to_vec(&service["Spec"]).map_err(|e| RuntimeError::Other(e.to_string()))?;
    let path = format!("/services/{id}/update?version={version}");
    let (status, body) = engine_call(hyper::Method::POST, &path, Some(spec)).await?;
    let text = String::from_utf8_lossy(&body);
    match status {
        200 => Ok(()),
        _ if text.contains("out of sequence") => Err(RuntimeError::Conflict(format!(
            "service {id} (version {version})"
        ))),
        _ => Err(RuntimeError::Other(format!(
            "updating service {id}: {status} {}",
            text.trim()
        ))),
    }
}

impl SwarmRuntime {
    /// The engine's client (connected on first use).
    pub async fn docker(&self) -> Result<Docker, RuntimeError> {
        self.engine.get().await
    }

    /// A runtime for the services of `deployment`; nothing is contacted until first use.
    pub fn new(task: DockerConfig, config: SwarmConfig, deployment: &str) -> SwarmRuntime {
        SwarmRuntime {
            task,
            config,
            deployment: deployment.to_string(),
            engine: Engine::default(),
            network_ready: tokio::sync::Mutex::new(false),
            nodes: tokio::sync::Mutex::new(HashMap::new()),
            containers: Mutex::new(HashMap::new()),
            cpus: Mutex::new(HashMap::new()),
            deaths: broadcast::channel(1).0,
            client: probe_client(),
        }
    }

    /// The service of `pool` (the one with its three labels), if there is one.
    pub async fn service(&self, d: &Docker, pool: &str) -> Result<Option<Service>, RuntimeError> {
        let labels = filters(&self.deployment, Some(pool));
        let filters = HashMap::from([("label", labels)]);
        let opts = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let mut found = d.list_services(Some(opts)).await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(RuntimeError::Other(format!(
                "{n} services carry the labels of pool {pool} in deployment {}: \
                 keep one (docker service ls --filter label=gantry.pool={pool})",
                self.deployment
            ))),
        }
    }

    /// Creates the overlay network (attachable) once, if it does not exist.
    async fn ensure_network(&self, d: &Docker) -> Result<(), RuntimeError> {
        let mut ready = self.network_ready.lock().await;
        if !*ready {
            let network = NetworkCreateRequest {
                name: self.config.network.clone(),
                driver: Some("overlay".into()),
                attachable: Some(true),
                ..Default::default()
            };
            super::docker::ensure_network(d, network, &self.deployment).await?;
            *ready = true;
        }
        Ok(())
    }

    /// The address of node `id` (its `Status.Addr`), remembered.
    async fn node_addr(&self, d: &Docker, id: &str) -> Result<IpAddr, RuntimeError> {
        let mut nodes = self.nodes.lock().await;
        if let Some(ip) = nodes.get(id) {
            return Ok(*ip);
        }
        let node = d.inspect_node(id).await?;
        let addr = node.status.and_then(|s| s.addr).unwrap_or_default();
        let ip = addr
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified())
            .ok_or_else(|| RuntimeError::NoAddress {
                id: id.to_string(),
                why: format!("node address {addr:?}"),
            })?;
        nodes.insert(id.to_string(), ip);
        Ok(ip)
    }

    /// The tasks of service `name` on the overlay network, as Swarm's DNS
    /// lists them (`tasks.<name>`: its running tasks); none when the name
    /// does not resolve (no task yet, or this process is not on the network).
    async fn by_dns(&self, name: &str, pool: &str) -> Vec<Replica> {
        let host = format!("tasks.{name}:{}", self.task.port);
        let mut out: Vec<Replica> = match tokio::net::lookup_host(&host).await {
            Ok(addrs) => addrs
                .map(|addr| Replica {
                    id: format!("{name}@{}", addr.ip()),
                    pool: pool.to_string(),
                    addr,
                })
                .collect(),
            Err(e) => {
                tracing::debug!(host = %host, error = %e, "No Swarm task resolves");
                Vec::new()
            }
        };
        out.sort();
        out.dedup();
        out
    }

    /// The running tasks of `service` that are meant to run, with their addresses.
    async fn running(
        &self,
        d: &Docker,
        service: &str,
        pool: &str,
    ) -> Result<Vec<Replica>, RuntimeError> {
        let filters = HashMap::from([
            ("service", vec![service.to_string()]),
            ("desired-state", vec!["running".to_string()]),
        ]);
        let opts = ListTasksOptionsBuilder::default().filters(&filters).build();
        let mut out = Vec::new();
        let mut containers = HashMap::new();
        for task in d.list_tasks(Some(opts)).await? {
            let running = task.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING);
            let (Some(id), Some(node)) = (task.id.clone(), task.node_id.clone()) else {
                continue;
            };
            if !running || task.desired_state != Some(TaskState::RUNNING) {
                continue;
            }
            let Some(port) = published_port(&task, self.task.port) else {
                tracing::debug!(task = %id, "Swarm task has no published port yet");
                continue;
            };
            let ip = match self.node_addr(d, &node).await {
                Ok(ip) => ip,
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "Swarm task's node has no address");
                    continue;
                }
            };
            if let Some(c) = task
                .status
                .and_then(|s| s.container_status)
                .and_then(|c| c.container_id)
            {
                containers.insert(id.clone(), c);
            }
            out.push(Replica {
                id,
                pool: pool.to_string(),
                addr: SocketAddr::new(ip, port),
            });
        }
        out.sort();
        if let Ok(mut m) = self.containers.lock() {
            m.insert(pool.to_string(), containers);
        }
        Ok(out)
    }
}

#[async_trait]
impl Runtime for SwarmRuntime {
    fn name(&self) -> &'static str {
        "swarm"
    }

    async fn list(&self, pool: &str) -> Result<Listing, RuntimeError> {
        let d = self.engine.get().await?;
        let Some(service) = self.service(&d, pool).await? else {
            return Ok(Listing {
                desired: Some(0),
                ..Default::default()
            });
        };
        let (Some(id), Some(spec)) = (service.id.as_deref(), service.spec.as_ref()) else {
            return Err(RuntimeError::Other(format!(
                "the service of pool {pool} has no id or spec"
            )));
        };
        let Some(desired) = replicas(spec) else {
            return Err(RuntimeError::Other(format!(
                "the service of pool {pool} is not a replicated service"
            )));
        };
        let cpus = spec
            .task_template
            .as_ref()
            .and_then(|t| t.resources.as_ref()?.limits.as_ref()?.nano_cpus)
            .filter(|n| *n > 0);
        if let (Some(n), Ok(mut m)) = (cpus, self.cpus.lock()) {
            m.insert(pool.to_string(), n as f64 / 1e9);
        }
        let serving = if self.config.publish {
            self.running(&d, id, pool).await?
        } else {
            let name = spec.name.as_deref().unwrap_or_default();
            self.by_dns(name, pool).await
        };
        Ok(Listing {
            serving,
            warm: Vec::new(),
            desired: Some(desired),
        })
    }

    async fn scale(&self, spec: &ReplicaSpec, to: u32) -> Result<(), RuntimeError> {
        let d = self.engine.get().await?;
        let Some(service) = self.service(&d, &spec.pool).await? else {
            let new = service_spec(&self.task, &self.config, &self.deployment, spec, to);
            let name = new.name.clone().unwrap_or_default();
            if name.len() > NAME_MAX {
                return Err(RuntimeError::Other(format!(
                    "service name {name} is longer than {NAME_MAX} characters: shorten the pool name"
                )));
            }
            self.ensure_network(&d).await?;
            d.create_service(new, None).await.map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                } => RuntimeError::Other(format!(
                    "a service named {name} exists without gantry's labels; \
                     remove it, or label it to adopt it"
                )),
                e => e.into(),
            })?;
            tracing::info!(pool = %spec.pool, service = %name, replicas = to, "Created Swarm service");
            return Ok(());
        };
        let id = service.id.as_deref().unwrap_or_default();
        update_replicas(read_service(id).await?, &spec.pool, to).await
    }

    async fn start(&self, _spec: &ReplicaSpec) -> Result<Replica, RuntimeError> {
        Err(RuntimeError::Other(
            "the swarm runtime starts tasks by the service's replica count, and keeps no warm spares"
                .into(),
        ))
    }

    async fn promote(&self, warm: &Replica) -> Result<(), RuntimeError> {
        Err(RuntimeError::Other(format!(
            "the swarm runtime keeps no warm spares ({})",
            warm.id
        )))
    }

    /// Swarm stops tasks itself: when the service shrinks (its pick), when
    /// one dies (replaced). Nothing to do for the one the loop lets go.
    async fn stop(&self, _replica: &Replica) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn ready(&self, replica: &Replica) -> bool {
        http_ready(&self.client, replica.addr).await
    }

    /// Tasks on this engine's node are measured; others have no figures.
    async fn usage(&self, replicas: &[Replica]) -> Vec<Usage> {
        let Ok(d) = self.engine.get().await else {
            return vec![Usage::default(); replicas.len()];
        };
        let (containers, cpus) = match (self.containers.lock(), self.cpus.lock()) {
            (Ok(c), Ok(l)) => (c.clone(), l.clone()),
            _ => return vec![Usage::default(); replicas.len()],
        };
        let d = &d;
        futures::future::join_all(replicas.iter().map(|r| {
            let container = containers.get(&r.pool).and_then(|c| c.get(&r.id)).cloned();
            let limit = cpus.get(&r.pool).copied();
            async move {
                match container {
                    Some(c) => container_usage(d, &c, limit).await,
                    None => Usage::default(),
                }
            }
        }))
        .await
    }

    fn deaths(&self) -> broadcast::Receiver<Death> {
        self.deaths.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ReplicaSpec {
        ReplicaSpec {
            pool: "analysis".into(),
            warm: false,
            cpus: Some(1.5),
            memory_mib: 512,
            pids: 100,
            model: None,
        }
    }

    #[test]
    fn a_new_service_is_labelled_hardened_limited_and_published_in_host_mode() {
        let s = service_spec(
            &DockerConfig::default(),
            &SwarmConfig::default(),
            "prod",
            &spec(),
            2,
        );
        assert_eq!(s.name.as_deref(), Some(&*service_name("analysis", "prod")));
        assert_eq!(s.labels, Some(labels("prod", "analysis")));
        assert_eq!(replicas(&s), Some(2));
        let task = s.task_template.unwrap();
        let c = task.container_spec.unwrap();
        assert_eq!(c.labels, Some(labels("prod", "analysis")));
        assert_eq!(c.user.as_deref(), Some("65534:65534"));
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.capability_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(c.privileges.unwrap().no_new_privileges, Some(true));
        assert_eq!(c.stop_grace_period, Some(30_000_000_000));
        let tmpfs = &c.mounts.unwrap()[0];
        assert_eq!(
            tmpfs.tmpfs_options.as_ref().unwrap().size_bytes,
            Some(64 << 20)
        );
        let limits = task.resources.unwrap().limits.unwrap();
        assert_eq!(limits.nano_cpus, Some(1_500_000_000));
        assert_eq!(limits.memory_bytes, Some(512 << 20));
        assert_eq!(limits.pids, Some(100));
        let port = &s.endpoint_spec.unwrap().ports.unwrap()[0];
        assert_eq!(port.target_port, Some(8000));
        assert_eq!(port.published_port, None, "the engine picks the host port");
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
    }

    #[test]
    fn service_names_differ_by_deployment() {
        let a = service_name("analysis", "prod");
        assert!(a.starts_with("gantry-analysis-") && a.len() == 24, "{a}");
        assert_ne!(a, service_name("analysis", "staging"));
        assert_eq!(a, service_name("analysis", "prod"));
    }
}
