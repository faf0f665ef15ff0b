//! What a worker container is, as pure values: its labels, the filters that find it, and its hardened create body.
//!
//! Every container the Docker runtime starts carries three labels:
//! `gantry.managed=true`, `gantry.deployment=<scaler.deployment>` and
//! `gantry.pool=<pool>`. [`filters`] names all three (the pool when known),
//! and [`is_ours`] checks them again before a container is stopped.
//!
//! It runs hardened whatever the image says: as `scaler.docker.user` (never
//! root), with a read-only root filesystem and a small `noexec` tmpfs on
//! `/tmp`, every capability dropped, `no-new-privileges`, the policy's
//! memory (no swap on top) and pids limits, on a user-defined network (the
//! config refuses `host`). The engine is never asked for more.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};

use super::{ReplicaSpec, DEPLOYMENT_LABEL, MANAGED_LABEL, POOL_LABEL};
use crate::scaler::config::DockerConfig;

/// The only writable place in a worker container (ONNX Runtime and the
/// standard library may want a temporary file); bounded, never executable.
pub const TMPFS: (&str, &str) = ("/tmp", "rw,noexec,nosuid,nodev,size=64m");

/// The labels of a container of `pool` in `deployment`.
pub fn labels(deployment: &str, pool: &str) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED_LABEL.into(), "true".into()),
        (DEPLOYMENT_LABEL.into(), deployment.into()),
        (POOL_LABEL.into(), pool.into()),
    ])
}

/// `label=` filter values for the containers of `deployment` (of `pool`, when given).
pub fn filters(deployment: &str, pool: Option<&str>) -> Vec<String> {
    let mut out = vec![
        format!("{MANAGED_LABEL}=true"),
        format!("{DEPLOYMENT_LABEL}={deployment}"),
    ];
    out.extend(pool.map(|p| format!("{POOL_LABEL}={p}")));
    out
}

/// Whether a container with `found` labels belongs to `pool` of `deployment`.
pub fn is_ours(found: &HashMap<String, String>, deployment: &str, pool: &str) -> bool {
    labels(deployment, pool)
        .iter()
        .all(|(k, v)| found.get(k) == Some(v))
}

/// The create body of a replica of `spec.pool`.
pub fn create_body(
    config: &DockerConfig,
    deployment: &str,
    spec: &ReplicaSpec,
) -> ContainerCreateBody {
    let port = format!("{}/tcp", config.port);
    let port_bindings = config.publish.then(|| {
        HashMap::from([(
            port.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }]),
        )])
    });
    let env: Vec<String> = config.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let memory = (spec.memory_mib * 1024 * 1024) as i64;
    ContainerCreateBody {
        image: Some(config.image.clone()),
        cmd: config.cmd.clone(),
        env: (!env.is_empty()).then_some(env),
        user: Some(config.user.clone()),
        labels: Some(labels(deployment, &spec.pool)),
        exposed_ports: Some(vec![port]),
        host_config: Some(HostConfig {
            network_mode: Some(config.network.clone()),
            port_bindings,
            nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
            memory: Some(memory),
            memory_swap: Some(memory),
            pids_limit: Some(i64::from(spec.pids)),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(TMPFS.0.into(), TMPFS.1.into())])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ReplicaSpec {
        ReplicaSpec {
            pool: "analysis".into(),
            cpus: Some(1.5),
            memory_mib: 512,
            pids: 100,
        }
    }

    #[test]
    fn containers_are_hardened_and_limited() {
        let body = create_body(&DockerConfig::default(), "prod", &spec());
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        let host = body.host_config.unwrap();
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.pids_limit, Some(100));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.memory_swap, host.memory, "no swap on top");
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("gantry"));
        assert!(host.privileged.is_none() && host.cap_add.is_none());
    }

    #[test]
    fn only_all_three_labels_make_a_container_ours() {
        let mine = labels("prod", "analysis");
        assert!(is_ours(&mine, "prod", "analysis"));
        assert!(!is_ours(&mine, "staging", "analysis"));
        assert!(!is_ours(&mine, "prod", "other"));
        let mut old = mine.clone();
        old.remove(DEPLOYMENT_LABEL);
        assert!(!is_ours(&old, "prod", "analysis"), "no deployment label");
        assert_eq!(
            filters("prod", Some("analysis")),
            [
                "gantry.managed=true",
                "gantry.deployment=prod",
                "gantry.pool=analysis"
            ]
        );
    }
}
