//! Host and process gauges from `sysinfo`: CPU, memory, disk and network.
//!
//! A [`SystemCollector`] refreshes on an interval (refreshing on every scrape
//! would make CPU % meaningless); the scaler reads the same numbers for
//! policies that target host CPU or memory when workers are local processes.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{register_gauge, register_int_counter_vec, Gauge, IntCounterVec};
use sysinfo::{Disks, Networks, Pid, ProcessesToUpdate, System};

/// Host CPU use, percent of all cores.
pub static HOST_CPU: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "gantry_host_cpu_percent",
        "Host CPU use, percent of all cores"
    )
    .expect("metric registers once")
});
/// Host memory use, percent.
pub static HOST_MEMORY: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!("gantry_host_memory_percent", "Host memory in use, percent")
        .expect("metric registers once")
});
/// Use of the fullest disk, percent.
pub static HOST_DISK: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "gantry_host_disk_percent",
        "Use of the fullest mounted disk, percent"
    )
    .expect("metric registers once")
});
/// Network bytes by direction, summed over interfaces.
pub static HOST_NETWORK: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gantry_host_network_bytes_total",
        "Bytes through all network interfaces since start",
        &["direction"]
    )
    .expect("metric registers once")
});
/// This process's CPU use, percent of one core.
pub static PROCESS_CPU: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "gantry_process_cpu_percent",
        "This process's CPU use, percent of one core"
    )
    .expect("metric registers once")
});
/// This process's resident memory.
pub static PROCESS_MEMORY: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "gantry_process_resident_bytes",
        "This process's resident memory in bytes"
    )
    .expect("metric registers once")
});

/// One reading of the host.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostReading {
    /// CPU percent of all cores.
    pub cpu_percent: f64,
    /// Memory percent.
    pub memory_percent: f64,
}

/// Owns the sysinfo handles and refreshes the gauges.
pub struct SystemCollector {
    system: System,
    disks: Disks,
    networks: Networks,
    pid: Option<Pid>,
}

impl Default for SystemCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemCollector {
    /// Takes a first reading so the next refresh has a CPU baseline.
    pub fn new() -> SystemCollector {
        let mut system = System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        SystemCollector {
            system,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            pid: sysinfo::get_current_pid().ok(),
        }
    }

    /// Refreshes every gauge and returns the host reading.
    pub fn refresh(&mut self) -> HostReading {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let cpu = f64::from(self.system.global_cpu_usage());
        let total = self.system.total_memory().max(1) as f64;
        let mem = 100.0 * self.system.used_memory() as f64 / total;
        HOST_CPU.set(cpu);
        HOST_MEMORY.set(mem);
        self.disks.refresh(true);
        let fullest = self
            .disks
            .list()
            .iter()
            .filter(|d| d.total_space() > 0)
            .map(|d| 100.0 * (1.0 - d.available_space() as f64 / d.total_space() as f64))
            .fold(0.0, f64::max);
        HOST_DISK.set(fullest);
        self.networks.refresh(true);
        let (rx, tx) = self
            .networks
            .values()
            .fold((0, 0), |(r, t), n| (r + n.received(), t + n.transmitted()));
        HOST_NETWORK.with_label_values(&["rx"]).inc_by(rx);
        HOST_NETWORK.with_label_values(&["tx"]).inc_by(tx);
        if let Some(pid) = self.pid {
            self.system
                .refresh_processes(ProcessesToUpdate::Some(&[pid]), true);
            if let Some(p) = self.system.process(pid) {
                PROCESS_CPU.set(f64::from(p.cpu_usage()));
                PROCESS_MEMORY.set(p.memory() as f64);
            }
        }
        HostReading {
            cpu_percent: cpu,
            memory_percent: mem,
        }
    }

    /// Refreshes every `every` until the task is dropped. Each refresh (procfs
    /// reads, `statvfs`) runs on a blocking thread, never on the async runtime
    /// the admin API and health checks share.
    pub async fn run(self, every: Duration) {
        let mut tick = tokio::time::interval(every.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL));
        let mut collector = Some(self);
        loop {
            tick.tick().await;
            let Some(mut c) = collector.take() else {
                return;
            };
            match tokio::task::spawn_blocking(move || {
                c.refresh();
                c
            })
            .await
            {
                Ok(c) => collector = Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "Host metrics refresh failed; host metrics stop");
                    return;
                }
            }
        }
    }
}
