//! Fan-out: the DynamoDB stream handler that notifies subscribers (docs/api.md#subscriptions-delivery).
//!
//! Records it acts on ([`zaqar::stream::admits`], which the template's FilterCriteria mirror; anything
//! else it is handed is skipped):
//! - INSERT of a message item (`M#…`): each live subscription of the queue gets the notification
//!   (only confirmed ones when confirmation is required), concurrently.
//! - INSERT/MODIFY of a subscription item (`S#…`) whose `notify_seq` grew: the subscription handler
//!   asked for a (un)subscribe confirmation, sent from here so the API request stays one write.
//!
//! Failures: each delivery runs Zaqar's retry policy, but only within a time budget per invocation
//! (`ZAQAR_FANOUT_BUDGET_MS`, default 4 s): no attempt, the first included, starts after it, and each
//! attempt has its own timeout (`ZAQAR_WEBHOOK_TIMEOUT_MS`), so an invocation ends within budget +
//! attempt timeout, far inside the function's timeout. A record whose delivery is still retryable at
//! the budget's end, or whose queue could not be read, is reported as a batch item failure, so Lambda
//! retries it (bounded by the event source's MaximumRetryAttempts/MaximumRecordAgeInSeconds, then the
//! on-failure destination). Rejected deliveries (4xx, refused addresses) and exhausted policies are
//! dropped and logged, as Zaqar does.
//!
//! Isolation: every record is classified, looked up and delivered on its own; a malformed record, an
//! unreadable queue or a failing subscriber costs only that record (or that delivery), and no code
//! path here panics on stored data (retry policies are clamped, instants and sums checked).
//!
//! Duplicates: a stream retry re-sends the batch from the first failed record on, finished records
//! included. This container remembers per record the subscribers it served and whether the record is
//! finished, so such a retry only notifies whom it has not yet. A subscriber is notified twice only
//! when the retry runs in another container (this one was recycled or crashed, or Lambda routed the
//! retry elsewhere), or when a delivery succeeded but its answer was lost (timeout after the
//! subscriber acted): delivery is at least once, as in Zaqar.

pub mod deliver;
pub mod mail;
pub mod notify;
pub mod retry;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use deliver::{Delivery, Outcome};
use futures::StreamExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;
use zaqar::keys::{self, Item};
use zaqar::meta::Metadata;
use zaqar::store::messages::Message;
use zaqar::store::subscriptions::Subscription;
use zaqar::store::{get_i64, get_s};
use zaqar::stream;
use zaqar::types::{ProjectId, QueueName};
use zaqar::vars::{ConfigError, Vars};
use zaqar::App;

/// Limits of one invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time after which retryable deliveries are handed back to the stream.
    pub budget: Duration,
    /// Timeout of one webhook request or SMTP session.
    pub attempt_timeout: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { budget: Duration::from_millis(4000), attempt_timeout: Duration::from_millis(3000), concurrency: 32 }
    }
}

impl Settings {
    /// Reads `ZAQAR_FANOUT_BUDGET_MS`, `ZAQAR_WEBHOOK_TIMEOUT_MS` and `ZAQAR_FANOUT_CONCURRENCY`; unset
    /// ones keep the defaults, malformed ones are an error (start-up stops).
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let d = Settings::default();
        let ms = |name: &str, default: Duration| {
            vars.number(name, default.as_millis() as u64, 1, 900_000).map(Duration::from_millis)
        };
        Ok(Settings {
            budget: ms("ZAQAR_FANOUT_BUDGET_MS", d.budget)?,
            attempt_timeout: ms("ZAQAR_WEBHOOK_TIMEOUT_MS", d.attempt_timeout)?,
            concurrency: vars.number("ZAQAR_FANOUT_CONCURRENCY", d.concurrency, 1, 1024)?,
        })
    }
}

/// Parses a raw stream event record by record, so one malformed record cannot fail the batch.
pub fn parse_event(payload: Value) -> Event {
    let mut event = Event::default();
    let records = match payload {
        Value::Object(mut o) => o.remove("Records").and_then(|r| if let Value::Array(a) = r { Some(a) } else { None }),
        _ => None,
    };
    for (i, raw) in records.unwrap_or_default().into_iter().enumerate() {
        match serde_json::from_value::<EventRecord>(raw) {
            Ok(r) => event.records.push(r),
            Err(e) => tracing::warn!(index = i, error = %e, "skipping a malformed stream record"),
        }
    }
    event
}

enum Work {
    Message { shard: keys::Shard, message: Message },
    Confirm { project: ProjectId, sub: Subscription },
}

struct Job {
    seq: Option<String>,
    /// Identifies the record across retries (for the in-memory "already delivered" set).
    key: String,
    work: Work,
}

fn image(item: &serde_dynamo::Item) -> Item {
    item.clone().into()
}

/// What a record asks for; `Ok(None)` for records this function ignores, `Err` for malformed ones.
fn classify(record: &EventRecord) -> Result<Option<Job>, String> {
    let keys_img = image(&record.change.keys);
    let pk = get_s(&keys_img, keys::PK).ok_or("no pk")?;
    let sk = get_s(&keys_img, keys::SK).ok_or("no sk")?;
    let seq = record.change.sequence_number.clone();
    let new = image(&record.change.new_image);
    if !stream::admits(&record.event_name, sk, &new) {
        return Ok(None);
    }
    let is_message = sk.starts_with(keys::MESSAGE_PREFIX);
    let is_subscription = sk.starts_with(keys::SUBSCRIPTION_PREFIX);
    match record.event_name.as_str() {
        "INSERT" if is_message => {
            let shard = keys::parse_messages_pk(pk).ok_or("unparsable message partition key")?;
            let message = Message::from_item(&new).ok_or("message image lacks fields")?;
            // The sequence number too: the same key may carry another message later.
            let key = format!("{pk}|{sk}|{}", seq.as_deref().unwrap_or_default());
            Ok(Some(Job { seq, key, work: Work::Message { shard, message } }))
        }
        "INSERT" | "MODIFY" if is_subscription => {
            let (_, project) = keys::parse_queue_pk(pk).ok_or("unparsable queue partition key")?;
            let sub = Subscription::from_item(&new).ok_or("subscription image lacks fields")?;
            let before = get_i64(&image(&record.change.old_image), stream::NOTIFY_SEQ).unwrap_or(0);
            if sub.notify.is_none() || sub.notify_seq <= before {
                return Ok(None);
            }
            let key = format!("{pk}|{sk}|{}", sub.notify_seq);
            Ok(Some(Job { seq, key, work: Work::Confirm { project, sub } }))
        }
        _ => Ok(None),
    }
}

/// What this container already did for a record: the subscribers served, and whether it is finished.
/// A stream retry re-sends every record from the first failed one on, finished ones included, so both
/// are remembered.
#[derive(Debug, Clone, Default)]
struct Progress {
    served: HashSet<String>,
    finished: bool,
}

/// Records remembered per container; beyond this the oldest half is forgotten.
const REMEMBERED: usize = 20_000;

/// Progress per record key, with the keys in the order they were first seen (for forgetting).
#[derive(Default)]
struct Memory {
    progress: HashMap<String, Progress>,
    order: std::collections::VecDeque<String>,
}

fn memory() -> &'static Mutex<Memory> {
    static MEMORY: OnceLock<Mutex<Memory>> = OnceLock::new();
    MEMORY.get_or_init(|| Mutex::new(Memory::default()))
}

fn progress_of(key: &str) -> Progress {
    let m = memory().lock().unwrap_or_else(|e| e.into_inner());
    m.progress.get(key).cloned().unwrap_or_default()
}

fn remember(key: &str, progress: Progress) {
    let mut m = memory().lock().unwrap_or_else(|e| e.into_inner());
    if m.progress.insert(key.to_string(), progress).is_none() {
        m.order.push_back(key.to_string());
    }
    if m.order.len() > REMEMBERED {
        for _ in 0..REMEMBERED / 2 {
            if let Some(old) = m.order.pop_front() {
                m.progress.remove(&old);
            }
        }
    }
}

/// One delivery to run: owned inputs for [`Delivery`].
struct Task {
    job: usize,
    sid: String,
    subscriber: String,
    options: Value,
    doc: Value,
    kind: mail::MailKind,
    schedule: Vec<Duration>,
}

/// The live subscriptions and metadata of one queue, loaded once per batch.
struct QueueView {
    subscriptions: Vec<Subscription>,
    meta: Option<Metadata>,
}

pub async fn handle_with(app: &App, settings: &Settings, event: Event) -> DynamoDbEventResponse {
    let deadline = Instant::now() + settings.budget;
    let mut jobs = Vec::new();
    for (i, record) in event.records.iter().enumerate() {
        match classify(record) {
            Ok(Some(job)) => jobs.push(job),
            Ok(None) => {}
            Err(why) => tracing::warn!(index = i, reason = why, "skipping a malformed stream record"),
        }
    }
    let mut failed = vec![false; jobs.len()];
    let mut views: HashMap<(String, String), Option<QueueView>> = HashMap::new();
    let mut posts: HashMap<keys::Shard, Option<zaqar::store::PostedUpTo>> = HashMap::new();
    let mut tasks = Vec::new();
    let now = app.store.now_ms();
    let confirmation_on = app.config.require_confirmation;
    for (j, job) in jobs.iter().enumerate() {
        let progress = progress_of(&job.key);
        if progress.finished {
            continue; // re-sent after an earlier record of its batch failed: already done here
        }
        let done = progress.served;
        match &job.work {
            Work::Message { shard, message } => {
                let (project, queue) = (&shard.project, &shard.queue);
                if !message.alive(now) {
                    continue;
                }
                // Only messages of committed posts are notified: a failed post's messages never are,
                // and one still being written is retried once its post commits.
                if !posts.contains_key(shard) {
                    if Instant::now() >= deadline {
                        failed[j] = true; // storage is slow: no budget left to even look
                        continue;
                    }
                    posts.insert(shard.clone(), app.store.posted_up_to(shard).await.ok());
                }
                match posts.get(shard).and_then(Option::as_ref).map(|p| p.state(message.k)) {
                    Some(zaqar::store::PostState::Committed) => {}
                    Some(zaqar::store::PostState::Failed) => continue,
                    Some(zaqar::store::PostState::Pending) | None => {
                        failed[j] = true;
                        continue;
                    }
                }
                let id = (project.as_str().to_string(), queue.as_str().to_string());
                if !views.contains_key(&id) {
                    if Instant::now() >= deadline {
                        failed[j] = true; // storage is slow: no budget left to even look
                        continue;
                    }
                    views.insert(id.clone(), load_view(app, project, queue).await);
                }
                let Some(view) = views.get(&id).and_then(Option::as_ref) else {
                    failed[j] = true; // storage unavailable: let the stream retry
                    continue;
                };
                let doc = notify::message_notification(message, queue.as_str());
                for sub in &view.subscriptions {
                    if !sub.alive(now) || (confirmation_on && !sub.confirmed) || done.contains(&sub.id) {
                        continue;
                    }
                    let policy = retry::effective(&sub.options, view.meta.as_ref());
                    tasks.push(Task {
                        job: j,
                        sid: sub.id.clone(),
                        subscriber: sub.subscriber.clone(),
                        options: sub.options.clone(),
                        doc: doc.clone(),
                        kind: mail::MailKind::Notification,
                        schedule: retry::schedule(&policy),
                    });
                }
            }
            Work::Confirm { project, sub, .. } => {
                let Some(key) = app.config.secret_key.as_deref() else { continue };
                if !confirmation_on || !sub.alive(now) || done.contains(&sub.id) {
                    continue;
                }
                let expires = sub.notify_expires_s.unwrap_or((now / 1000).saturating_add(sub.ttl_s));
                let doc = notify::confirmation(sub, project.as_str(), key, app.config.public_url.as_deref(), expires);
                tasks.push(Task {
                    job: j,
                    sid: sub.id.clone(),
                    subscriber: sub.subscriber.clone(),
                    options: sub.options.clone(),
                    doc,
                    kind: mail::MailKind::Confirmation,
                    schedule: retry::schedule(&retry::effective(&sub.options, None)),
                });
            }
        }
    }
    // Boxed, named futures: a closure-built stream here trips rustc's higher-ranked Send check when
    // the caller spawns this function's future (the local poller does).
    let deliveries: Vec<futures::future::BoxFuture<'_, (usize, String, Outcome)>> =
        tasks.iter().map(|t| Box::pin(run_task(app, t, deadline, settings.attempt_timeout)) as _).collect();
    let outcomes: Vec<(usize, String, Outcome)> =
        futures::stream::iter(deliveries).buffer_unordered(settings.concurrency).collect().await;
    let mut served: Vec<HashSet<String>> = jobs.iter().map(|j| progress_of(&j.key).served).collect();
    for (j, sid, outcome) in outcomes {
        let job = &jobs[j];
        match &outcome {
            Outcome::Delivered => tracing::debug!(record = %job.key, subscription = %sid, "delivered"),
            Outcome::Rejected(why) => {
                tracing::warn!(record = %job.key, subscription = %sid, reason = %why, "notification refused; dropped")
            }
            Outcome::GaveUp(why) => {
                tracing::warn!(record = %job.key, subscription = %sid, reason = %why, "retry policy exhausted; dropped")
            }
            Outcome::Deferred(why) => {
                tracing::info!(record = %job.key, subscription = %sid, reason = %why, "delivery deferred to a stream retry")
            }
        }
        if matches!(outcome, Outcome::Deferred(_)) {
            failed[j] = true;
        } else {
            served[j].insert(sid);
        }
    }
    let mut response = DynamoDbEventResponse::default();
    for (j, job) in jobs.iter().enumerate() {
        remember(&job.key, Progress { served: std::mem::take(&mut served[j]), finished: !failed[j] });
        if failed[j] {
            match &job.seq {
                Some(seq) => {
                    let mut failure = DynamoDbBatchItemFailure::default();
                    failure.item_identifier = Some(seq.clone());
                    response.batch_item_failures.push(failure);
                }
                None => tracing::warn!(record = %job.key, "a failed record has no sequence number; not retried"),
            }
        }
    }
    response
}

async fn run_task(app: &App, t: &Task, deadline: Instant, attempt_timeout: Duration) -> (usize, String, Outcome) {
    let delivery = Delivery {
        app,
        subscriber: &t.subscriber,
        options: &t.options,
        doc: &t.doc,
        mail: t.kind,
        schedule: t.schedule.clone(),
        deadline,
        attempt_timeout,
    };
    (t.job, t.sid.clone(), delivery.run().await)
}

async fn load_view(app: &App, project: &ProjectId, queue: &QueueName) -> Option<QueueView> {
    let subscriptions = match app.store.queue_subscriptions(project, queue).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(queue = %queue, error = %e, "could not load subscriptions");
            return None;
        }
    };
    if subscriptions.is_empty() {
        return Some(QueueView { subscriptions, meta: None });
    }
    match app.store.queue_metadata(project, queue).await {
        Ok(meta) => Some(QueueView { subscriptions, meta }),
        Err(e) => {
            tracing::error!(queue = %queue, error = %e, "could not load queue metadata");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(text: &str) -> Event {
        parse_event(serde_json::from_str(text).expect("fixture is JSON"))
    }

    #[test]
    fn fixtures_classify() {
        let event = fixture(include_str!("../events/message-insert.json"));
        assert!(matches!(classify(&event.records[0]), Ok(Some(Job { work: Work::Message { .. }, .. }))));
        let event = fixture(include_str!("../events/subscription-insert.json"));
        match classify(&event.records[0]) {
            Ok(Some(Job { work: Work::Confirm { sub, .. }, seq, .. })) => {
                assert_eq!((sub.notify.as_deref(), sub.notify_seq), (Some("SubscriptionConfirmation"), 1));
                assert_eq!(seq.as_deref(), Some("111100000000012345678902"));
            }
            _ => panic!("a subscription insert that requests a confirmation"),
        }
    }

    #[test]
    fn malformed_records_are_skipped_or_ignored() {
        let event = fixture(include_str!("../events/malformed.json"));
        // Records that do not even deserialise are dropped by parse_event; the rest classify to
        // errors (logged) or to nothing.
        assert_eq!(event.records.len(), 5);
        assert!(event.records.iter().all(|r| !matches!(classify(r), Ok(Some(_)))));
        assert!(parse_event(serde_json::json!({"Records": "x"})).records.is_empty());
    }
}
