//! Docker containers through the Engine API (bollard): create, start, list, watch, stop.
//!
//! Containers carry `gantry.managed=true`, `gantry.deployment=<name>` and
//! `gantry.pool=<pool>` ([`super::container`]); every list and event filter
//! names those labels, and [`Runtime::stop`] checks them again before
//! touching a container, so a container of another deployment, or without
//! them, is never adopted, stopped or removed. Exited containers of this
//! deployment, and created ones never started, are removed when listed (no
//! orphans); one that cannot be removed (our own stop removing it already)
//! is logged and the rest are still cleaned. A container's CPU limit (for
//! CPU % of the limit) is read from its inspect, so adopted containers are
//! measured like started ones. They run hardened: non-root, read-only, no
//! capabilities, limited (see [`super::container`]). A warm spare is a
//! container whose name says so; promoting it renames it
//! ([`container::is_warm`]).
//!
//! Addressing (see `scaler.docker.publish`): with `publish` (the default,
//! for a proxy on the host) the worker port is published on 127.0.0.1 at a
//! random host port and traffic goes there; without it, traffic goes to the
//! container's address on the user-defined network, for a proxy that runs
//! in a container on the same network (docker-compose).
//!
//! The engine is connected lazily (`negotiate_version`, since the engine may
//! be older than the client); when it is unreachable every call fails fast
//! and the control loop backs off, while the proxy keeps serving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerInspectResponse, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptions, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::broadcast;

use super::container::{self, cpu_limit, create_body, is_ours, Listed};
use super::{
    http_ready, last_words, probe_client, Death, Listing, Replica, ReplicaSpec, Runtime,
    RuntimeError, Usage, DEPLOYMENT_LABEL, MANAGED_LABEL, POOL_LABEL,
};
use crate::client::HttpClient;
use crate::scaler::config::DockerConfig;

/// Seconds a container gets to stop before it is killed.
const STOP_SECONDS: i32 = 5;

/// The Docker runtime.
pub struct DockerRuntime {
    config: DockerConfig,
    /// `scaler.deployment`: the only `gantry.deployment` label value touched.
    deployment: String,
    engine: Engine,
    network_ready: tokio::sync::Mutex<bool>,
    deaths: broadcast::Sender<Death>,
    client: HttpClient,
    /// CPU limit per container id, cores (for CPU % of the limit), from inspect.
    cpus: Mutex<HashMap<String, f64>>,
}

/// The engine's client, connected on first use (and again after a failure
/// to connect), for the Docker and Swarm runtimes.
#[derive(Default)]
pub struct Engine(tokio::sync::Mutex<Option<Docker>>);

impl Engine {
    /// A connected client, connecting (and negotiating the API version) if needed.
    pub async fn get(&self) -> Result<Docker, RuntimeError> {
        let mut slot = self.0.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let d = Docker::connect_with_local_defaults()?
            .with_timeout(Duration::from_secs(30))
            .negotiate_version()
            .await?;
        *slot = Some(d.clone());
        Ok(d)
    }
}

/// Creates `network` (labelled as managed by `deployment`) unless a
/// network of its name exists.
pub async fn ensure_network(
    d: &Docker,
    mut network: NetworkCreateRequest,
    deployment: &str,
) -> Result<(), RuntimeError> {
    match d.inspect_network(&network.name, None).await {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => {
            network.labels = Some(HashMap::from([
                (MANAGED_LABEL.into(), "true".into()),
                (DEPLOYMENT_LABEL.into(), deployment.to_string()),
            ]));
            let (name, driver) = (network.name.clone(), network.driver.clone());
            d.create_network(network).await?;
            tracing::info!(network = %name, driver = ?driver, "Created network");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the engine answered 404.
pub fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerRuntime {
    /// A runtime for `config` that manages the containers of `deployment`;
    /// nothing is contacted until first use.
    pub fn new(config: DockerConfig, deployment: &str) -> DockerRuntime {
        DockerRuntime {
            config,
            deployment: deployment.to_string(),
            engine: Engine::default(),
            network_ready: tokio::sync::Mutex::new(false),
            deaths: broadcast::channel(64).0,
            client: probe_client(),
            cpus: Mutex::new(HashMap::new()),
        }
    }

    /// A connected client, connecting (and negotiating the API version) if needed.
    pub async fn docker(&self) -> Result<Docker, RuntimeError> {
        self.engine.get().await
    }

    /// Watches the engine's events for managed containers that die and
    /// reports them; reconnects with backoff for as long as the runtime lives.
    pub fn watch_events(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            while let Some(rt) = weak.upgrade() {
                match rt.docker().await {
                    Ok(d) => {
                        let events = rt.event_stream(&d);
                        drop(rt);
                        events.await;
                        delay = Duration::from_secs(1);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "Docker events unavailable");
                        drop(rt);
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
                tokio::time::sleep(delay).await;
            }
        });
    }

    /// Forwards `die` events of this deployment's containers until the stream ends.
    fn event_stream(&self, d: &Docker) -> impl std::future::Future<Output = ()> + 'static {
        let labels = container::filters(&self.deployment, None);
        let filters = HashMap::from([
            ("type", vec!["container"]),
            ("event", vec!["die"]),
            ("label", labels.iter().map(String::as_str).collect()),
        ]);
        let opts = EventsOptionsBuilder::default().filters(&filters).build();
        let mut stream = d.events(Some(opts));
        let deaths = self.deaths.clone();
        let d = d.clone();
        async move {
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { break };
                let Some(actor) = ev.actor else { continue };
                let attrs = actor.attributes.unwrap_or_default();
                let (Some(id), Some(pool)) = (actor.id, attrs.get(POOL_LABEL)) else {
                    continue;
                };
                let code = attrs.get("exitCode").map_or("?", String::as_str);
                let reason = match last_log_line(&d, &id).await {
                    Some(words) => format!("exit code {code}: {words}"),
                    None => format!("exit code {code}"),
                };
                tracing::warn!(container = %id, pool = %pool, reason = %reason, "Managed container died");
                let replica = Replica {
                    id,
                    pool: pool.clone(),
                    addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                };
                let _ = deaths.send(Death { replica, reason });
            }
        }
    }

    /// Creates the user-defined network once, if it does not exist.
    async fn ensure_network(&self, d: &Docker) -> Result<(), RuntimeError> {
        let mut ready = self.network_ready.lock().await;
        if !*ready {
            let network = NetworkCreateRequest {
                name: self.config.network.clone(),
                driver: Some("bridge".into()),
                ..Default::default()
            };
            ensure_network(d, network, &self.deployment).await?;
            *ready = true;
        }
        Ok(())
    }

    /// Inspects container `id`: notes its CPU limit, returns where the proxy reaches it.
    async fn inspect(&self, d: &Docker, id: &str) -> Result<SocketAddr, RuntimeError> {
        let info = d.inspect_container(id, None).await?;
        if let Some(cores) = cpu_limit(info.host_config.as_ref()) {
            if let Ok(mut m) = self.cpus.lock() {
                m.insert(id.to_string(), cores);
            }
        }
        self.address(info, id)
    }

    /// Where the proxy reaches the container `info` describes.
    fn address(
        &self,
        info: ContainerInspectResponse,
        id: &str,
    ) -> Result<SocketAddr, RuntimeError> {
        let no = |why: &str| RuntimeError::NoAddress {
            id: id.to_string(),
            why: why.to_string(),
        };
        let net = info
            .network_settings
            .ok_or_else(|| no("no network settings"))?;
        if self.config.publish {
            let key = format!("{}/tcp", self.config.port);
            let port = net
                .ports
                .and_then(|p| p.get(&key).cloned().flatten())
                .and_then(|b| b.into_iter().find_map(|b| b.host_port?.parse::<u16>().ok()))
                .ok_or_else(|| no("port not published"))?;
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        } else {
            let ip = net
                .networks
                .and_then(|n| n.get(&self.config.network).cloned())
                .and_then(|e| e.ip_address)
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                .ok_or_else(|| no("no address on the network"))?;
            Ok(SocketAddr::new(ip, self.config.port))
        }
    }

    /// Removes a container, whatever its state.
    async fn remove(&self, d: &Docker, id: &str) -> Result<(), RuntimeError> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match d.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn usage_of(&self, d: &Docker, id: &str) -> Usage {
        let limit = self.cpus.lock().ok().and_then(|m| m.get(id).copied());
        container_usage(d, id, limit).await
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn list(&self, pool: &str) -> Result<Listing, RuntimeError> {
        let d = self.docker().await?;
        let labels = container::filters(&self.deployment, Some(pool));
        let filters = HashMap::from([("label", labels.iter().map(String::as_str).collect())]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let mut out = Listing::default();
        let mut leftovers = Vec::new();
        for c in d.list_containers(Some(opts)).await? {
            let Some(id) = c.id else { continue };
            let warm = container::is_warm(c.names.as_deref().unwrap_or_default(), pool);
            match container::listed(c.state) {
                Listed::Replica => {}
                Listed::Remove => {
                    leftovers.push((id, c.state.map(|s| s.to_string())));
                    continue;
                }
                Listed::Skip => continue,
            }
            match self.inspect(&d, &id).await {
                Ok(addr) => {
                    let to = if warm {
                        &mut out.warm
                    } else {
                        &mut out.serving
                    };
                    to.push(Replica {
                        id,
                        pool: pool.to_string(),
                        addr,
                    });
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "Managed container has no address")
                }
            }
        }
        remove_all(&leftovers, |id| {
            tracing::info!(container = %id, pool, deployment = %self.deployment, "Removing a stopped managed container");
            self.remove(&d, id)
        })
        .await;
        Ok(out)
    }

    async fn start(&self, spec: &ReplicaSpec) -> Result<Replica, RuntimeError> {
        let d = self.docker().await?;
        self.ensure_network(&d).await?;
        let name = container::name(&spec.pool, spec.warm, rand::random::<u32>());
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let id = d
            .create_container(
                Some(opts),
                create_body(&self.config, &self.deployment, spec),
            )
            .await?
            .id;
        let started = async {
            d.start_container(&id, None).await?;
            self.inspect(&d, &id).await
        };
        match started.await {
            Ok(addr) => Ok(Replica {
                id,
                pool: spec.pool.clone(),
                addr,
            }),
            Err(e) => {
                let _ = self.remove(&d, &id).await;
                Err(e)
            }
        }
    }

    async fn promote(&self, warm: &Replica) -> Result<(), RuntimeError> {
        let d = self.docker().await?;
        let info = d.inspect_container(&warm.id, None).await?;
        let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
        let names = info.name.into_iter().collect::<Vec<_>>();
        if !is_ours(&labels, &self.deployment, &warm.pool)
            || !container::is_warm(&names, &warm.pool)
        {
            return Err(RuntimeError::Other(format!(
                "container {} is not a warm spare of pool {} in deployment {}",
                warm.id, warm.pool, self.deployment
            )));
        }
        // The same random suffix: the serving name cannot be taken by another of ours.
        let suffix = names[0].rsplit('-').next().unwrap_or_default();
        let name = format!("gantry-{}-{suffix}", warm.pool);
        d.rename_container(&warm.id, RenameContainerOptions { name })
            .await?;
        Ok(())
    }

    async fn stop(&self, replica: &Replica) -> Result<(), RuntimeError> {
        let d = self.docker().await?;
        let info = match d.inspect_container(&replica.id, None).await {
            Ok(i) => i,
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
        if !is_ours(&labels, &self.deployment, &replica.pool) {
            return Err(RuntimeError::Other(format!(
                "refusing to stop container {}: it lacks the labels {MANAGED_LABEL}=true, \
                 {DEPLOYMENT_LABEL}={}, {POOL_LABEL}={}",
                replica.id, self.deployment, replica.pool
            )));
        }
        let opts = StopContainerOptionsBuilder::default()
            .t(STOP_SECONDS)
            .build();
        match d.stop_container(&replica.id, Some(opts)).await {
            Ok(()) => {}
            Err(e) if not_found(&e) => return Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Ok(mut m) = self.cpus.lock() {
            m.remove(&replica.id);
        }
        self.remove(&d, &replica.id).await
    }

    async fn ready(&self, replica: &Replica) -> bool {
        http_ready(&self.client, replica.addr).await
    }

    async fn usage(&self, replicas: &[Replica]) -> Vec<Usage> {
        let Ok(d) = self.docker().await else {
            return vec![Usage::default(); replicas.len()];
        };
        let d = &d;
        futures::future::join_all(replicas.iter().map(|r| self.usage_of(d, &r.id))).await
    }

    fn deaths(&self) -> broadcast::Receiver<Death> {
        self.deaths.subscribe()
    }
}

/// CPU % (of `limit` cores, else of the host) and memory % (of its limit)
/// of container `id`, from one stats sample; `None` where the engine has none.
pub async fn container_usage(d: &Docker, id: &str, limit: Option<f64>) -> Usage {
    let opts = StatsOptionsBuilder::default().stream(false).build();
    let Some(Ok(s)) = d.stats(id, Some(opts)).next().await else {
        return Usage::default();
    };
    let cpu = (|| {
        let (now, pre) = (s.cpu_stats.as_ref()?, s.precpu_stats.as_ref()?);
        let used = now.cpu_usage.as_ref()?.total_usage? as f64
            - pre.cpu_usage.as_ref()?.total_usage? as f64;
        let system = now.system_cpu_usage? as f64 - pre.system_cpu_usage? as f64;
        let online = f64::from(now.online_cpus.unwrap_or(1).max(1));
        if system <= 0.0 {
            return None;
        }
        let cores = used / system * online;
        let limit = limit.unwrap_or(online);
        Some(cores / limit * 100.0)
    })();
    let memory = (|| {
        let m = s.memory_stats.as_ref()?;
        let inactive = m
            .stats
            .as_ref()
            .and_then(|s| s.get("inactive_file").copied());
        let used = m.usage?.saturating_sub(inactive.unwrap_or(0)) as f64;
        let limit = m.limit? as f64;
        (limit > 0.0).then(|| used / limit * 100.0)
    })();
    Usage {
        cpu_percent: cpu,
        memory_percent: memory,
    }
}

/// Removes each of `leftovers` (id, state) with `remove`; a failure (a 409
/// while our own stop removes it, an engine hiccup) is logged and the rest
/// are still removed; the next listing tries again. Returns the ids that failed.
async fn remove_all<'a, F, Fut>(
    leftovers: &'a [(String, Option<String>)],
    remove: F,
) -> Vec<&'a str>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<(), RuntimeError>>,
{
    let mut failed = Vec::new();
    for (id, state) in leftovers {
        if let Err(e) = remove(id).await {
            tracing::warn!(container = %id, state = state.as_deref().unwrap_or("?"), error = %e, "Cannot remove a stopped managed container; will retry");
            failed.push(id.as_str());
        }
    }
    failed
}

/// The telling line of a dead container's last log lines (see [`last_words`]).
async fn last_log_line(d: &Docker, id: &str) -> Option<String> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail("20")
        .build();
    let read = d
        .logs(id, Some(opts))
        .take(20)
        .filter_map(|chunk| async move { chunk.ok().map(|c| c.to_string()) })
        .collect::<Vec<String>>();
    let chunks = tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()?;
    let text = chunks.concat();
    last_words(text.lines())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_failed_removal_does_not_stop_the_others() {
        let leftovers: Vec<(String, Option<String>)> = ["a", "busy", "c"]
            .iter()
            .map(|id| (id.to_string(), Some("exited".to_string())))
            .collect();
        let tried = Mutex::new(Vec::new());
        let failed = remove_all(&leftovers, |id| {
            tried.lock().unwrap().push(id.to_string());
            async move {
                match id {
                    "busy" => Err(RuntimeError::Other(
                        "409: removal of container busy is already in progress".into(),
                    )),
                    _ => Ok(()),
                }
            }
        })
        .await;
        assert_eq!(failed, ["busy"]);
        assert_eq!(*tried.lock().unwrap(), ["a", "busy", "c"]);
    }
}
