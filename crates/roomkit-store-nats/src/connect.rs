//! Opening the store: the connection (bounded in time), the JetStream check, and the stream
//! and bucket, created or checked against what the store needs.

use std::{sync::Arc, time::Duration};

use async_nats::{
    jetstream::{
        self,
        context::{CreateStreamErrorKind, GetStreamErrorKind, RequestErrorKind},
        stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
        ErrorCode,
    },
    ConnectOptions, ServerAddr,
};

use crate::{layout::Names, Inner, NatsStore, NatsStoreConfig, NatsStoreError};

/// The dedupe window of the chat stream: a publish sent again within it is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

fn jetstream_err(context: &str, e: impl std::fmt::Display) -> NatsStoreError {
    NatsStoreError::JetStream(format!("{context}: {e}"))
}

pub(crate) async fn connect(config: NatsStoreConfig) -> Result<NatsStore, NatsStoreError> {
    let names = Names::new(&config.name_prefix).map_err(NatsStoreError::Config)?;
    if config.urls.is_empty() {
        return Err(NatsStoreError::Config("no NATS URL given".into()));
    }
    if !(1..=5).contains(&config.replicas) {
        return Err(NatsStoreError::Config(format!("replicas must be 1 to 5, got {}", config.replicas)));
    }
    if config.publish_attempts == 0 || config.scan_batch == 0 {
        return Err(NatsStoreError::Config("publish_attempts and scan_batch must be at least 1".into()));
    }
    let addrs = config
        .urls
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>().map_err(|e| NatsStoreError::Config(format!("NATS URL {url:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let urls = config.urls.join(",");
    let max_delay = config.reconnect_delay_max;
    let options = ConnectOptions::new()
        .name("roomkit-store")
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max_delay));
    let client = match tokio::time::timeout(config.connect_timeout, options.connect(addrs)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return Err(NatsStoreError::Unreachable { urls, reason: e.to_string() }),
        Err(_) => {
            return Err(NatsStoreError::Unreachable {
                urls,
                reason: format!("no server answered within {:?} (connect_timeout)", config.connect_timeout),
            })
        }
    };
    let js = jetstream::ContextBuilder::new().timeout(config.request_timeout).build(client);
    // A cluster that is still forming (no meta leader yet, or fewer servers than the replicas
    // asked for) is waited for, up to `connect_timeout` from here.
    let mut forming = Forming::new(config.connect_timeout);
    // The account info says whether JetStream is there (read as plain JSON: servers of
    // different versions send different fields).
    let info = loop {
        match js.request::<_, _, serde_json::Value>("INFO", &()).await {
            Ok(info) => match info.get("error") {
                Some(error) if forming.again(error_code(error)).await => {}
                _ => break Ok(info),
            },
            Err(e) => break Err(e),
        }
    };
    match info {
        Ok(info) => {
            if let Some(error) = info.get("error") {
                return Err(jetstream_err("JetStream account info", forming.explain(error)));
            }
        }
        Err(e) => {
            return Err(match e.kind() {
                RequestErrorKind::NoResponders => NatsStoreError::JetStreamDisabled { urls },
                RequestErrorKind::TimedOut => NatsStoreError::Unreachable {
                    urls,
                    reason: format!(
                        "JetStream did not answer within {:?} (request_timeout)",
                        config.request_timeout
                    ),
                },
                RequestErrorKind::Other => jetstream_err("JetStream account info", e),
            })
        }
    }
    let stream = ensure_stream(&js, chat_stream(&names, config.replicas), &mut forming).await?;
    let rooms_stream = ensure_stream(&js, bucket_stream(&names, config.replicas), &mut forming).await?;
    let rooms = js
        .get_key_value(&names.bucket)
        .await
        .map_err(|e| jetstream_err(&format!("bucket {}", names.bucket), e))?;
    Ok(NatsStore {
        inner: Arc::new(Inner {
            js,
            stream,
            rooms,
            rooms_stream,
            names,
            config,
            views: Default::default(),
            apply_lock: Default::default(),
            lost_acks: Default::default(),
            fetched: Default::default(),
            scanned: Default::default(),
        }),
    })
}

/// JetStream's answers while its cluster is still forming: no meta leader yet, or fewer
/// servers in it than the replicas asked for.
fn is_forming(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(ErrorCode::CLUSTER_NOT_AVAILABLE | ErrorCode::CLUSTER_NO_PEERS | ErrorCode::CLUSTER_INCOMPLETE)
    )
}

/// The JetStream error code of an error object in an API answer (`err_code`).
fn error_code(error: &serde_json::Value) -> Option<ErrorCode> {
    Some(ErrorCode(error.get("err_code")?.as_u64()?))
}

/// The waiting for a forming cluster during [`connect`]: until a deadline, with pauses that
/// double from 50 ms up to a second.
struct Forming {
    deadline: tokio::time::Instant,
    timeout: Duration,
    pause: Duration,
    /// The cluster was still forming at the deadline.
    gave_up: bool,
}

impl Forming {
    fn new(timeout: Duration) -> Self {
        let deadline = tokio::time::Instant::now() + timeout;
        Self { deadline, timeout, pause: Duration::from_millis(50), gave_up: false }
    }

    /// Whether to ask again after an answer with `code`: after a pause if the cluster is
    /// forming and the deadline is not past.
    async fn again(&mut self, code: Option<ErrorCode>) -> bool {
        if !is_forming(code) {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            self.gave_up = true;
            return false;
        }
        tokio::time::sleep(self.pause.min(self.deadline - now)).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(1));
        true
    }

    /// An error to report, saying so if the cluster was still forming at the deadline.
    fn explain(&self, e: impl std::fmt::Display) -> String {
        if self.gave_up {
            format!("{e} (the cluster did not form within {:?}: connect_timeout)", self.timeout)
        } else {
            e.to_string()
        }
    }
}

/// The wait before reconnection attempt `attempts`: none for the first, then doubling from
/// 50 ms up to `max`.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    match attempts {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(50).saturating_mul(1 << (n - 2).min(16)).min(max),
    }
}

/// The chat stream's settings: file storage, no limits (retention is the store's), deletes
/// allowed, the dedupe window.
fn chat_stream(names: &Names, replicas: usize) -> stream::Config {
    stream::Config {
        name: names.stream.clone(),
        subjects: vec![names.stream_subjects()],
        storage: StorageType::File,
        num_replicas: replicas,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        max_age: Duration::ZERO,
        duplicate_window: DUPLICATE_WINDOW,
        description: Some("roomkit chatroom messages, one subject per room".into()),
        ..Default::default()
    }
}

/// The room bucket's stream, as JetStream's key-value buckets are laid out: one message per
/// key (the newest value), rollups for purges, no deletes of single messages.
fn bucket_stream(names: &Names, replicas: usize) -> stream::Config {
    stream::Config {
        name: names.bucket_stream(),
        subjects: vec![format!("$KV.{}.>", names.bucket)],
        storage: StorageType::File,
        num_replicas: replicas,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::New,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: 1,
        max_age: Duration::ZERO,
        duplicate_window: DUPLICATE_WINDOW,
        allow_rollup: true,
        deny_delete: true,
        // Reads go to the stream's leader: a replica answering a direct get may not have an
        // acknowledged write yet.
        allow_direct: false,
        description: Some("roomkit room records, by room".into()),
        ..Default::default()
    }
}

/// What in `existing` keeps the store from working as `wanted` says: the storage, the
/// replicas, the subjects, limits that would drop messages behind its back, denied deletes.
fn conflicts(existing: &stream::Config, wanted: &stream::Config) -> Vec<String> {
    let mut problems = Vec::new();
    if existing.storage != wanted.storage {
        problems.push(format!("storage is {:?}, not {:?}", existing.storage, wanted.storage));
    }
    if existing.num_replicas.max(1) != wanted.num_replicas {
        problems.push(format!("{} replicas, not {}", existing.num_replicas, wanted.num_replicas));
    }
    for subject in &wanted.subjects {
        if !existing.subjects.contains(subject) {
            problems.push(format!("subjects {:?} do not include {subject:?}", existing.subjects));
        }
    }
    if existing.retention != RetentionPolicy::Limits {
        problems.push(format!("retention policy {:?}, not limits", existing.retention));
    }
    if existing.max_messages > 0 || existing.max_bytes > 0 || existing.max_age > Duration::ZERO {
        problems.push("limits (max messages, bytes or age) that would drop messages".into());
    }
    let per_subject = |n: i64| if n > 0 { n } else { -1 };
    if per_subject(existing.max_messages_per_subject) != per_subject(wanted.max_messages_per_subject) {
        problems.push(format!(
            "{} messages per subject, not {}",
            existing.max_messages_per_subject, wanted.max_messages_per_subject
        ));
    }
    if (existing.deny_delete && !wanted.deny_delete) || existing.deny_purge || existing.sealed {
        problems.push("deletes or purges denied, or sealed".into());
    }
    if wanted.allow_rollup && !existing.allow_rollup {
        problems.push("rollups not allowed".into());
    }
    problems
}

/// Creates the stream `wanted` describes, or checks the existing one against it; asks again
/// while the cluster is `forming`.
async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
    forming: &mut Forming,
) -> Result<jetstream::stream::Stream, NatsStoreError> {
    let mut created_meanwhile = 0;
    while created_meanwhile < 2 {
        match js.get_stream(&wanted.name).await {
            Ok(mut stream) => {
                let existing =
                    stream.info().await.map_err(|e| jetstream_err("stream info", e))?.config.clone();
                let problems = conflicts(&existing, &wanted);
                if problems.is_empty() {
                    return Ok(stream);
                }
                return Err(NatsStoreError::Conflict { name: wanted.name, reason: problems.join("; ") });
            }
            Err(e) if is_not_found(e.kind()) => {}
            Err(e) => {
                let code = match e.kind() {
                    GetStreamErrorKind::JetStream(j) => Some(j.error_code()),
                    _ => None,
                };
                if forming.again(code).await {
                    continue;
                }
                return Err(jetstream_err(&format!("stream {}", wanted.name), forming.explain(e)));
            }
        }
        match js.create_stream(wanted.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                let code = match e.kind() {
                    CreateStreamErrorKind::JetStream(j) => Some(j.error_code()),
                    _ => None,
                };
                if code == Some(ErrorCode::STREAM_NAME_EXIST) {
                    // Created meanwhile by another store: check it.
                    created_meanwhile += 1;
                } else if !forming.again(code).await {
                    return Err(jetstream_err(
                        &format!("creating stream {}", wanted.name),
                        forming.explain(e),
                    ));
                }
            }
        }
    }
    Err(NatsStoreError::JetStream(format!("stream {} keeps changing", wanted.name)))
}

fn is_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(ref e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_up_to_the_bound() {
        let max = Duration::from_secs(2);
        let delays: Vec<Duration> = (1..=8).map(|n| reconnect_delay(n, max)).collect();
        assert_eq!(delays[0], Duration::ZERO);
        assert_eq!(delays[1], Duration::from_millis(50));
        assert_eq!(delays[2], Duration::from_millis(100));
        assert_eq!(delays[7], max);
        assert_eq!(reconnect_delay(usize::MAX, max), max);
    }

    #[test]
    fn a_stream_with_limits_or_other_storage_conflicts() {
        let names = Names::new("roomkit").unwrap();
        let wanted = chat_stream(&names, 1);
        assert!(conflicts(&wanted, &wanted).is_empty());
        let bucket = bucket_stream(&names, 1);
        assert!(conflicts(&bucket, &bucket).is_empty());
        let mut other = wanted.clone();
        other.storage = StorageType::Memory;
        other.max_age = Duration::from_secs(60);
        other.num_replicas = 3;
        assert_eq!(conflicts(&other, &wanted).len(), 3);
    }
}
