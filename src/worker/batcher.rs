//! The dynamic batcher: a bounded queue feeding session threads, batching like Triton.
//!
//! Requests (jobs of one or more URLs) go into one queue whose length is
//! bounded in items; a full queue refuses at once ([`WorkerError::QueueFull`]).
//! Each session thread owns one [`Engine`]. When it is free it takes the
//! oldest job and gathers more until the batch holds `max_batch_size` items or
//! the oldest has waited `max_queue_delay`; jobs already queued are taken
//! without waiting. `max_batch_size = 1` turns batching off. A job larger
//! than `max_batch_size` runs on its own, in chunks of `max_batch_size`.
//!
//! Inference runs on these threads, never on the async runtime; callers wait
//! on a oneshot channel.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::model::Engine;
use super::WorkerError;
use crate::metrics::worker as m;

/// Writes the features of one URL into a row of the model's input, overwriting all of it.
pub type Featurizer = fn(&str, &mut [f32]);

/// How the batcher forms batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most items per model execution; 1 turns batching off.
    pub max_batch_size: usize,
    /// Longest the oldest queued item waits for a fuller batch.
    pub max_queue_delay: Duration,
    /// Most items waiting in the queue; more are refused.
    pub queue_capacity: usize,
}

type Reply = oneshot::Sender<Result<Vec<f32>, WorkerError>>;

/// One request: its URLs, when it was queued, and where the scores go.
struct Job {
    urls: Vec<String>,
    enqueued: Instant,
    reply: Reply,
}

/// The receiving end shared by the session threads; the one holding the lock gathers.
struct Gather {
    rx: mpsc::Receiver<Job>,
    /// A job taken that did not fit the last batch; it leads the next one.
    carry: Option<Job>,
}

/// State the handle and the session threads share.
struct Shared {
    settings: BatchSettings,
    /// Items queued and not yet started.
    queued: AtomicUsize,
    /// Session threads still running.
    alive: AtomicUsize,
}

/// Handle to the queue and its session threads. Dropping it closes the queue;
/// the threads finish the jobs already queued and exit.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl Batcher {
    /// Starts one session thread per engine.
    pub fn start(
        engines: Vec<Box<dyn Engine>>,
        featurize: Featurizer,
        dim: usize,
        settings: BatchSettings,
    ) -> Result<Batcher, WorkerError> {
        let (tx, rx) = mpsc::channel();
        let gather = Arc::new(Mutex::new(Gather { rx, carry: None }));
        let shared = Arc::new(Shared {
            settings,
            queued: AtomicUsize::new(0),
            alive: AtomicUsize::new(engines.len()),
        });
        for (i, engine) in engines.into_iter().enumerate() {
            let session = Session {
                engine,
                featurize,
                dim,
                shared: shared.clone(),
                gather: gather.clone(),
                input: Vec::new(),
                scores: Vec::new(),
            };
            thread::Builder::new()
                .name(format!("gantry-session-{i}"))
                .spawn(move || session.run())
                .map_err(|e| WorkerError::Thread(e.to_string()))?;
        }
        Ok(Batcher { tx, shared })
    }

    /// Queues `urls` as one job; the receiver gets one score per URL, in order.
    pub fn submit(
        &self,
        urls: Vec<String>,
    ) -> Result<oneshot::Receiver<Result<Vec<f32>, WorkerError>>, WorkerError> {
        let n = urls.len();
        let capacity = self.shared.settings.queue_capacity;
        // An empty queue takes any job, so a job larger than the queue is not refused forever.
        self.shared
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q == 0 || q + n <= capacity).then_some(q + n)
            })
            .map_err(|_| WorkerError::QueueFull)?;
        m::QUEUE_LENGTH.add(n as i64);
        let (reply, rx) = oneshot::channel();
        let job = Job {
            urls,
            enqueued: Instant::now(),
            reply,
        };
        if self.tx.send(job).is_err() {
            self.shared.queued.fetch_sub(n, Ordering::AcqRel);
            m::QUEUE_LENGTH.sub(n as i64);
            return Err(WorkerError::Stopped);
        }
        Ok(rx)
    }

    /// Scores `urls`, waiting for their batch; one score per URL, in order.
    pub async fn score(&self, urls: Vec<String>) -> Result<Vec<f32>, WorkerError> {
        if urls.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(urls)?.await.map_err(|_| WorkerError::Stopped)?
    }

    /// The batching settings.
    pub fn settings(&self) -> BatchSettings {
        self.shared.settings
    }

    /// Items waiting in the queue now.
    pub fn queue_length(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// True when the queue cannot take one more item.
    pub fn saturated(&self) -> bool {
        self.queue_length() >= self.shared.settings.queue_capacity
    }

    /// Session threads still running.
    pub fn sessions_alive(&self) -> usize {
        self.shared.alive.load(Ordering::Acquire)
    }
}

/// One session thread: its engine and reusable buffers.
struct Session {
    engine: Box<dyn Engine>,
    featurize: Featurizer,
    dim: usize,
    shared: Arc<Shared>,
    gather: Arc<Mutex<Gather>>,
    /// Row-major `[rows, dim]` features of the batch being run.
    input: Vec<f32>,
    /// Scores of the last execution.
    scores: Vec<f32>,
}

impl Session {
    fn run(mut self) {
        let _alive = AliveGuard(self.shared.clone());
        loop {
            let batch = {
                let mut gather = self.gather.lock().unwrap_or_else(|p| p.into_inner());
                gather.next_batch(&self.shared.settings)
            };
            let Some(jobs) = batch else { break };
            self.run_batch(jobs);
        }
    }

    fn run_batch(&mut self, jobs: Vec<Job>) {
        let start = Instant::now();
        let items: usize = jobs.iter().map(|j| j.urls.len()).sum();
        self.shared.queued.fetch_sub(items, Ordering::AcqRel);
        m::QUEUE_LENGTH.sub(items as i64);
        for job in &jobs {
            let wait = start.saturating_duration_since(job.enqueued).as_secs_f64();
            for _ in 0..job.urls.len() {
                m::QUEUE_WAIT.observe(wait);
            }
        }
        let urls: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.urls.iter().map(String::as_str))
            .collect();
        // A panic in feature extraction or the engine fails this batch, not the thread.
        let result = catch_unwind(AssertUnwindSafe(|| self.score_all(&urls)))
            .unwrap_or_else(|_| Err(WorkerError::Inference("inference panicked".into())));
        match result {
            Ok(scores) => {
                let mut offset = 0;
                for job in jobs {
                    let n = job.urls.len();
                    let _ = job.reply.send(Ok(scores[offset..offset + n].to_vec()));
                    offset += n;
                }
            }
            Err(e) => {
                tracing::warn!(items, error = %e, "Batch failed");
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Scores `urls` in executions of at most `max_batch_size` rows.
    fn score_all(&mut self, urls: &[&str]) -> Result<Vec<f32>, WorkerError> {
        let mut all = Vec::with_capacity(urls.len());
        let dim = self.dim;
        for chunk in urls.chunks(self.shared.settings.max_batch_size.max(1)) {
            let started = Instant::now();
            // Rows are overwritten whole by the featurizer: no need to zero them first.
            self.input.resize(chunk.len() * dim, 0.0);
            for (row, url) in self.input.chunks_exact_mut(dim).zip(chunk) {
                (self.featurize)(url, row);
            }
            self.engine
                .score(&self.input, chunk.len(), &mut self.scores)?;
            if self.scores.len() != chunk.len() {
                return Err(WorkerError::Inference(format!(
                    "engine gave {} scores for {} rows",
                    self.scores.len(),
                    chunk.len()
                )));
            }
            m::COMPUTE.observe(started.elapsed().as_secs_f64());
            m::BATCH_EXECUTIONS.inc();
            m::INFERENCES.inc_by(chunk.len() as u64);
            m::BATCH_SIZE.observe(chunk.len() as f64);
            all.extend_from_slice(&self.scores);
        }
        Ok(all)
    }
}

impl Gather {
    /// Blocks for the oldest job, then gathers the next batch; `None` once the queue is closed and empty.
    fn next_batch(&mut self, settings: &BatchSettings) -> Option<Vec<Job>> {
        let first = match self.carry.take() {
            Some(job) => job,
            None => self.rx.recv().ok()?,
        };
        let deadline = first.enqueued + settings.max_queue_delay;
        let mut items = first.urls.len();
        let mut jobs = vec![first];
        while items < settings.max_batch_size {
            let next = match self.rx.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match self.rx.recv_timeout(left) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if items + next.urls.len() > settings.max_batch_size {
                self.carry = Some(next);
                break;
            }
            items += next.urls.len();
            jobs.push(next);
        }
        Some(jobs)
    }
}

/// Counts a session thread out when it exits, however it exits.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Condvar;

    use super::*;

    /// Writes the URL's length as the first feature.
    fn length_feature(url: &str, row: &mut [f32]) {
        row[0] = url.len() as f32;
    }

    fn panicking_feature(url: &str, row: &mut [f32]) {
        assert!(url != "boom", "bad input");
        row[0] = url.len() as f32;
    }

    /// Scores each row with its first feature; records batch sizes; can hold
    /// every execution until the test opens the gate.
    #[derive(Clone, Default)]
    struct Fake {
        sizes: Arc<Mutex<Vec<usize>>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        entered: Option<mpsc::Sender<()>>,
    }

    impl Fake {
        fn gated() -> (Fake, mpsc::Receiver<()>) {
            let (tx, rx) = mpsc::channel();
            let fake = Fake {
                entered: Some(tx),
                ..Fake::default()
            };
            (fake, rx)
        }

        fn open(&self) {
            *self.gate.0.lock().unwrap() = true;
            self.gate.1.notify_all();
        }

        fn sizes(&self) -> Vec<usize> {
            self.sizes.lock().unwrap().clone()
        }
    }

    impl Engine for Fake {
        fn score(
            &mut self,
            input: &[f32],
            rows: usize,
            scores: &mut Vec<f32>,
        ) -> Result<(), WorkerError> {
            if let Some(entered) = &self.entered {
                let _ = entered.send(());
                let mut open = self.gate.0.lock().unwrap();
                while !*open {
                    open = self.gate.1.wait(open).unwrap();
                }
            }
            self.sizes.lock().unwrap().push(rows);
            scores.clear();
            scores.extend(input.chunks_exact(input.len() / rows).map(|r| r[0]));
            Ok(())
        }
    }

    fn settings(
        max_batch_size: usize,
        max_queue_delay: Duration,
        queue_capacity: usize,
    ) -> BatchSettings {
        BatchSettings {
            max_batch_size,
            max_queue_delay,
            queue_capacity,
        }
    }

    fn urls(lens: &[usize]) -> Vec<String> {
        lens.iter().map(|&n| "x".repeat(n)).collect()
    }

    /// Holds the single session on a first job, queues `jobs`, opens the gate,
    /// and returns the scores of each queued job and the batch sizes seen.
    fn run_held(s: BatchSettings, jobs: &[Vec<String>]) -> (Vec<Vec<f32>>, Vec<usize>) {
        let (fake, entered) = Fake::gated();
        let batcher = Batcher::start(vec![Box::new(fake.clone())], length_feature, 3, s).unwrap();
        let first = batcher.submit(urls(&[1])).unwrap();
        entered.recv().unwrap();
        let pending: Vec<_> = jobs
            .iter()
            .map(|j| batcher.submit(j.clone()).unwrap())
            .collect();
        fake.open();
        assert_eq!(first.blocking_recv().unwrap().unwrap(), vec![1.0]);
        let scores = pending
            .into_iter()
            .map(|r| r.blocking_recv().unwrap().unwrap())
            .collect();
        (scores, fake.sizes())
    }

    #[test]
    fn queued_requests_form_one_batch() {
        let jobs: Vec<_> = (2..7).map(|n| urls(&[n])).collect();
        let (scores, sizes) = run_held(settings(8, Duration::ZERO, 64), &jobs);
        assert_eq!(
            scores,
            vec![vec![2.0], vec![3.0], vec![4.0], vec![5.0], vec![6.0]]
        );
        assert_eq!(sizes, vec![1, 5]);
    }

    #[test]
    fn batch_size_one_turns_batching_off() {
        let jobs: Vec<_> = (2..5).map(|n| urls(&[n])).collect();
        let (_, sizes) = run_held(settings(1, Duration::from_secs(3600), 64), &jobs);
        assert_eq!(sizes, vec![1, 1, 1, 1]);
    }

    #[test]
    fn batches_stop_at_max_batch_size() {
        let jobs: Vec<_> = (2..12).map(|n| urls(&[n])).collect();
        let (scores, sizes) = run_held(settings(4, Duration::ZERO, 64), &jobs);
        assert_eq!(
            scores.concat(),
            (2..12).map(|n| n as f32).collect::<Vec<_>>()
        );
        assert_eq!(sizes, vec![1, 4, 4, 2]);
    }

    #[test]
    fn a_job_that_does_not_fit_leads_the_next_batch() {
        let jobs = vec![urls(&[2, 3]), urls(&[4, 5, 6]), urls(&[7])];
        let (scores, sizes) = run_held(settings(4, Duration::ZERO, 64), &jobs);
        assert_eq!(scores, vec![vec![2.0, 3.0], vec![4.0, 5.0, 6.0], vec![7.0]]);
        assert_eq!(sizes, vec![1, 2, 4]);
    }

    #[test]
    fn a_job_larger_than_a_batch_runs_in_chunks() {
        let jobs = vec![urls(&[2, 3, 4, 5, 6, 7, 8, 9, 10, 11])];
        let (scores, sizes) = run_held(settings(4, Duration::ZERO, 64), &jobs);
        assert_eq!(scores[0], (2..12).map(|n| n as f32).collect::<Vec<_>>());
        assert_eq!(sizes, vec![1, 4, 4, 2]);
    }

    #[test]
    fn a_full_batch_does_not_wait_for_the_delay() {
        let fake = Fake::default();
        let s = settings(4, Duration::from_secs(3600), 64);
        let batcher = Batcher::start(vec![Box::new(fake.clone())], length_feature, 3, s).unwrap();
        let reply = batcher.submit(urls(&[1, 2, 3, 4])).unwrap();
        assert_eq!(
            reply.blocking_recv().unwrap().unwrap(),
            vec![1.0, 2.0, 3.0, 4.0]
        );
    }

    #[test]
    fn a_full_queue_refuses_and_recovers() {
        let (fake, entered) = Fake::gated();
        let s = settings(8, Duration::ZERO, 3);
        let batcher = Batcher::start(vec![Box::new(fake.clone())], length_feature, 3, s).unwrap();
        let first = batcher.submit(urls(&[1])).unwrap();
        entered.recv().unwrap();
        let queued = batcher.submit(urls(&[2, 3])).unwrap();
        assert!(!batcher.saturated());
        assert!(matches!(
            batcher.submit(urls(&[4, 5])),
            Err(WorkerError::QueueFull)
        ));
        let last = batcher.submit(urls(&[4])).unwrap();
        assert!(batcher.saturated());
        assert!(matches!(
            batcher.submit(urls(&[5])),
            Err(WorkerError::QueueFull)
        ));
        assert_eq!(batcher.queue_length(), 3);
        fake.open();
        first.blocking_recv().unwrap().unwrap();
        assert_eq!(queued.blocking_recv().unwrap().unwrap(), vec![2.0, 3.0]);
        assert_eq!(last.blocking_recv().unwrap().unwrap(), vec![4.0]);
        assert_eq!(batcher.queue_length(), 0);
    }

    #[test]
    fn an_empty_queue_takes_a_job_larger_than_its_capacity() {
        let batcher = Batcher::start(
            vec![Box::new(Fake::default())],
            length_feature,
            3,
            settings(2, Duration::ZERO, 2),
        )
        .unwrap();
        let reply = batcher.submit(urls(&[1, 2, 3])).unwrap();
        assert_eq!(reply.blocking_recv().unwrap().unwrap(), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_panicking_featurizer_fails_its_batch_not_the_thread() {
        let batcher = Batcher::start(
            vec![Box::new(Fake::default())],
            panicking_feature,
            3,
            settings(1, Duration::ZERO, 8),
        )
        .unwrap();
        let bad = batcher.submit(vec!["boom".into()]).unwrap();
        assert!(matches!(
            bad.blocking_recv().unwrap(),
            Err(WorkerError::Inference(_))
        ));
        let good = batcher.submit(urls(&[2])).unwrap();
        assert_eq!(good.blocking_recv().unwrap().unwrap(), vec![2.0]);
        assert_eq!(batcher.sessions_alive(), 1);
    }

    #[test]
    fn several_sessions_share_one_queue() {
        let engines: Vec<Box<dyn Engine>> =
            vec![Box::new(Fake::default()), Box::new(Fake::default())];
        let batcher =
            Batcher::start(engines, length_feature, 3, settings(4, Duration::ZERO, 256)).unwrap();
        let replies: Vec<_> = (1..50)
            .map(|n| batcher.submit(urls(&[n])).unwrap())
            .collect();
        for (n, r) in (1..50).zip(replies) {
            assert_eq!(r.blocking_recv().unwrap().unwrap(), vec![n as f32]);
        }
        assert_eq!(batcher.sessions_alive(), 2);
    }
}
