//! The integration tests, one binary: the real `gantry` binary, real backends on 127.0.0.1:0,
//! real Prometheus, Redis and Docker engine. One module per area; shared code in `support`.

mod support;

mod alerts;
mod bench;
mod cache_disk;
mod cache_redis;
mod canary;
mod compose;
mod faults;
mod first_run;
mod http_cache;
mod limits;
mod model_golden;
mod observability;
mod proxy_balancing;
mod proxy_cache;
mod proxy_failures;
mod scaler_docker;
mod scaler_docker_runtime;
mod scaler_lease;
mod scaler_local;
mod scaler_policies;
mod scaler_swarm;
mod status_page;
mod tidy;
mod tls;
mod tls_upstream;
mod worker_batching;
mod worker_cli;
mod worker_golden;
mod worker_http;
mod worker_image;
