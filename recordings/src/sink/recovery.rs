//! Recovery probes. After a call that got no answer (a refused connection, a timeout) a
//! delivery waits out its backoff, which grows to half a minute in a long outage; output
//! produced once the service is back would wait that long too. Instead, while any delivery
//! waits after such a failure, one task per service asks the service something cheap about
//! every second ([`PROBE_INTERVAL`], jittered) and wakes every waiting delivery the moment it
//! answers. Failures the service answered (a missing bucket, a refused key) do not probe:
//! the service is there, and their backoff stands.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use tokio::sync::watch;

/// Mean time between probes while a delivery waits; each is jittered by ±25%.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Deadline of one probe: a stalled service must not hold the next one back for long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One probe: true when the service answered, whatever the answer.
type Probe = Box<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Wakes the deliveries to one service when it answers again.
pub(crate) struct Recovery {
    /// Counts probe answers; waiters watch it change.
    answered: watch::Sender<u64>,
    /// A probe task runs.
    probing: Mutex<bool>,
    probe: Probe,
    /// [`PROBE_INTERVAL`], shorter in tests.
    interval: Duration,
}

impl Recovery {
    fn new(probe: Probe, interval: Duration) -> Arc<Self> {
        let (answered, _) = watch::channel(0);
        Arc::new(Recovery { answered, probing: Mutex::new(false), probe, interval })
    }

    /// Probes S3 with ListBuckets (any answer, AccessDenied too, means S3 is there).
    pub(crate) fn s3(client: &aws_sdk_s3::Client) -> Arc<Self> {
        let conf =
            client.config().to_builder().retry_config(RetryConfig::disabled()).timeout_config(timeouts());
        let client = aws_sdk_s3::Client::from_conf(conf.build());
        Recovery::new(
            Box::new(move || {
                let client = client.clone();
                Box::pin(async move { answered(client.list_buckets().max_buckets(1).send().await) })
            }),
            PROBE_INTERVAL,
        )
    }

    /// Probes CloudWatch Logs with DescribeLogGroups for one group.
    pub(crate) fn logs(client: &aws_sdk_cloudwatchlogs::Client) -> Arc<Self> {
        let conf =
            client.config().to_builder().retry_config(RetryConfig::disabled()).timeout_config(timeouts());
        let client = aws_sdk_cloudwatchlogs::Client::from_conf(conf.build());
        Recovery::new(
            Box::new(move || {
                let client = client.clone();
                Box::pin(async move { answered(client.describe_log_groups().limit(1).send().await) })
            }),
            PROBE_INTERVAL,
        )
    }

    /// Waits `delay`, or less: until the service answers a probe made meanwhile. Returns
    /// whether it answered.
    pub(crate) async fn wait(self: &Arc<Self>, delay: Duration) -> bool {
        let mut answers = self.answered.subscribe();
        self.start_probing();
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            changed = answers.changed() => changed.is_ok(),
        }
    }

    fn start_probing(self: &Arc<Self>) {
        let mut probing = self.probing.lock().unwrap_or_else(|p| p.into_inner());
        if std::mem::replace(&mut *probing, true) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move { this.probe_while_waited_for().await });
    }

    /// Probes until nobody waits any more.
    async fn probe_while_waited_for(self: Arc<Self>) {
        loop {
            tokio::time::sleep(jittered(self.interval)).await;
            {
                // Checked under the lock `start_probing` takes, so a waiter that subscribed
                // after this check starts a new task.
                let mut probing = self.probing.lock().unwrap_or_else(|p| p.into_inner());
                if self.answered.receiver_count() == 0 {
                    *probing = false;
                    return;
                }
            }
            if (self.probe)().await {
                tracing::debug!("recovery probe answered; waking the waiting deliveries");
                self.answered.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }
}

/// Short deadlines: a probe is one small request.
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(PROBE_TIMEOUT)
        .read_timeout(PROBE_TIMEOUT)
        .operation_attempt_timeout(PROBE_TIMEOUT)
        .operation_timeout(PROBE_TIMEOUT)
        .build()
}

/// Whether a probe got an answer: a success, or an error the service sent.
fn answered<T, E, R>(result: Result<T, aws_sdk_s3::error::SdkError<E, R>>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => !super::no_answer(&e) && !matches!(e, aws_sdk_s3::error::SdkError::ConstructionFailure(_)),
    }
}

/// `d` ±25%, so probes of many brokers do not fall into step.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.75 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    const TICK: Duration = Duration::from_millis(40);

    fn fake(up: Arc<AtomicBool>, calls: Arc<AtomicU32>) -> Arc<Recovery> {
        let probe: Probe = Box::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            let up = up.load(Ordering::SeqCst);
            Box::pin(async move { up })
        });
        Recovery::new(probe, TICK)
    }

    #[tokio::test]
    async fn a_waiter_wakes_at_the_first_answer_and_probing_stops_without_waiters() {
        let (up, calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
        let recovery = fake(up.clone(), calls.clone());
        let waiter = tokio::spawn({
            let r = recovery.clone();
            async move { r.wait(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(TICK * 10).await;
        assert!(calls.load(Ordering::SeqCst) >= 3, "probes while the service is down");
        assert!(!waiter.is_finished());
        up.store(true, Ordering::SeqCst);
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert!(woke, "woken by the answer, not the 30 s delay");
        // Nobody waits: the task stops after at most one more probe.
        tokio::time::sleep(TICK * 5).await;
        let after = calls.load(Ordering::SeqCst);
        tokio::time::sleep(TICK * 10).await;
        assert_eq!(calls.load(Ordering::SeqCst), after, "probing stopped");
        assert!(!*recovery.probing.lock().unwrap());
    }

    #[tokio::test]
    async fn without_an_answer_the_delay_runs_out() {
        let recovery = fake(Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
        let start = std::time::Instant::now();
        assert!(!recovery.wait(TICK * 5).await);
        assert!(start.elapsed() >= TICK * 5);
    }
}
