//! Fault injection for integration tests: real DynamoDB Local calls, failed the ways DynamoDB and the
//! network fail them.
//!
//! Two parts, because an SDK interceptor cannot do everything:
//! - [`Injector`], an interceptor on the AWS SDK client, decides per DynamoDB call (an SDK "execution")
//!   whether and how it fails, from a seeded generator, and counts what it injected. It rewrites the
//!   response itself when the request must reach DynamoDB and its answer be lost as a 500
//!   ([`FaultKind::ServerErrorAfter`]: the write happened, the caller sees an error, the SDK may retry).
//! - [`proxy::FaultProxy`], a small HTTP proxy in front of DynamoDB Local, carries out what needs the
//!   network: throttling and 500s that never reach DynamoDB, connection resets before or after
//!   DynamoDB applied the request, and stalls past the client's attempt timeout. The interceptor tags
//!   the request with [`FAULT_HEADER`]; the proxy strips the tag before forwarding.
//!
//! A faulted call fails either once (the SDK's retry absorbs it, as with most real throttling) or on
//! every attempt (the handler sees the error and must stay all-or-nothing). Faults after the request
//! reached DynamoDB are what make half-done operations: a retried `ADD`, a conditional write whose
//! retry finds its own earlier write, a batch whose first chunk landed.
//!
//! Seeds: [`Faults::from_env`] reads `ZAQAR_FAULT_SEED` (decimal or `0x` hex); each client mixes its
//! label into the seed, so a worker's sequence of decisions is the same on every run (the interleaving
//! of workers is not).

pub mod proxy;

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zaqar::clock::Clock;
use zaqar::config::Config;
use zaqar::timeouts::StorageTimeouts;
use zaqar::App;

/// The request header that tells the proxy which fault to carry out.
pub const FAULT_HEADER: &str = "x-zaqar-fault";

/// The seed used when `ZAQAR_FAULT_SEED` is not set.
pub const DEFAULT_SEED: u64 = 0x5eed_2a9a_f417_0010;

/// One way a DynamoDB call fails. "Before": DynamoDB never saw the request. "After": DynamoDB applied
/// it and the answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// HTTP 400 `ProvisionedThroughputExceededException` or `ThrottlingException` (retried by the SDK).
    Throttle,
    /// HTTP 500 `InternalServerError` without touching DynamoDB.
    ServerErrorBefore,
    /// The request is applied, then its response is replaced by a 500.
    ServerErrorAfter,
    /// The connection is reset before the request is forwarded.
    ResetBefore,
    /// The request is applied, then the connection is reset instead of answering.
    ResetAfter,
    /// Nothing is forwarded and nothing answers until the client's attempt timeout.
    StallBefore,
    /// The request is applied, then the answer is withheld past the client's attempt timeout.
    StallAfter,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Throttle,
        FaultKind::ServerErrorBefore,
        FaultKind::ServerErrorAfter,
        FaultKind::ResetBefore,
        FaultKind::ResetAfter,
        FaultKind::StallBefore,
        FaultKind::StallAfter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Throttle => "throttle",
            FaultKind::ServerErrorBefore => "5xx-before",
            FaultKind::ServerErrorAfter => "5xx-after",
            FaultKind::ResetBefore => "reset-before",
            FaultKind::ResetAfter => "reset-after",
            FaultKind::StallBefore => "stall-before",
            FaultKind::StallAfter => "stall-after",
        }
    }

    pub fn parse(text: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == text)
    }

    /// Whether DynamoDB applies the request before the fault hits.
    pub fn after_apply(self) -> bool {
        matches!(self, FaultKind::ServerErrorAfter | FaultKind::ResetAfter | FaultKind::StallAfter)
    }

    fn index(self) -> usize {
        FaultKind::ALL.iter().position(|k| *k == self).expect("listed")
    }
}

/// How often and how faults are injected.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub seed: u64,
    /// Share of DynamoDB calls (executions) that are faulted, in parts per million.
    pub rate_ppm: u32,
    /// Relative weights of [`FaultKind::ALL`].
    pub weights: [u32; 7],
    /// Share of faulted calls that fail on every attempt rather than once, in percent.
    pub persistent_percent: u32,
}

impl FaultPlan {
    /// `rate` of calls faulted, kinds mixed, half of the faults persistent; seed from the environment.
    pub fn mixed(rate: f64) -> Self {
        FaultPlan {
            seed: seed_from_env(),
            rate_ppm: (rate * 1_000_000.0) as u32,
            // throttle, 5xx-before, 5xx-after, reset-before, reset-after, stall-before, stall-after
            weights: [24, 14, 18, 10, 16, 8, 10],
            persistent_percent: 50,
        }
    }
}

/// `ZAQAR_FAULT_SEED` (decimal or `0x` hex), else [`DEFAULT_SEED`].
pub fn seed_from_env() -> u64 {
    let Ok(text) = std::env::var("ZAQAR_FAULT_SEED") else { return DEFAULT_SEED };
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    };
    parsed.unwrap_or_else(|| panic!("ZAQAR_FAULT_SEED={text} is not a number"))
}

/// The shared switch and counters of one test's faults.
pub struct Faults {
    pub plan: FaultPlan,
    enabled: AtomicBool,
    executions: AtomicU64,
    attempts: AtomicU64,
    faulted_executions: AtomicU64,
    injected: [AtomicU64; 7],
    by_operation: Mutex<BTreeMap<(String, FaultKind), u64>>,
    /// Failed attempts the injector did not cause (DynamoDB errors, real timeouts), by cause.
    natural: Mutex<BTreeMap<String, u64>>,
}

/// What the counters say, for the report.
#[derive(Debug, Clone, Default)]
pub struct FaultReport {
    pub executions: u64,
    pub attempts: u64,
    pub faulted_executions: u64,
    /// Faulted attempts by kind.
    pub injected: BTreeMap<&'static str, u64>,
    pub by_operation: BTreeMap<String, u64>,
    /// Failed attempts not injected, by cause ("timeout", a DynamoDB error code …).
    pub natural: BTreeMap<String, u64>,
}

impl FaultReport {
    pub fn injected_total(&self) -> u64 {
        self.injected.values().sum()
    }
}

impl std::fmt::Display for FaultReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 * 100.0 / of as f64 };
        writeln!(
            f,
            "DynamoDB calls: {} ({} attempts); faulted calls: {} ({:.2} %); faulted attempts: {} ({:.2} %)",
            self.executions,
            self.attempts,
            self.faulted_executions,
            pct(self.faulted_executions, self.executions),
            self.injected_total(),
            pct(self.injected_total(), self.attempts)
        )?;
        let kinds: Vec<String> = self.injected.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(f, "faulted attempts by kind: {}", kinds.join(", "))?;
        let ops: Vec<String> = self.by_operation.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(f, "faulted attempts by operation: {}", ops.join(", "))?;
        let natural: Vec<String> = self.natural.iter().map(|(k, n)| format!("{k} {n}")).collect();
        write!(f, "failed attempts not injected (DynamoDB Local, real timeouts): {}", natural.join(", "))
    }
}

impl Faults {
    pub fn new(plan: FaultPlan) -> Arc<Self> {
        Arc::new(Faults {
            plan,
            enabled: AtomicBool::new(true),
            executions: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            faulted_executions: AtomicU64::new(0),
            injected: Default::default(),
            by_operation: Mutex::new(BTreeMap::new()),
            natural: Mutex::new(BTreeMap::new()),
        })
    }

    /// Turns injection on or off for every client built from this (quiescence: off).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    pub fn report(&self) -> FaultReport {
        let mut by_operation = BTreeMap::new();
        for ((op, kind), n) in self.by_operation.lock().unwrap().iter() {
            *by_operation.entry(format!("{op}/{}", kind.name())).or_default() += n;
        }
        FaultReport {
            executions: self.executions.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
            faulted_executions: self.faulted_executions.load(Ordering::Relaxed),
            injected: FaultKind::ALL
                .iter()
                .map(|k| (k.name(), self.injected[k.index()].load(Ordering::Relaxed)))
                .collect(),
            by_operation,
            natural: self.natural.lock().unwrap().clone(),
        }
    }

    fn count(&self, op: &str, kind: FaultKind) {
        self.injected[kind.index()].fetch_add(1, Ordering::Relaxed);
        *self.by_operation.lock().unwrap().entry((op.to_string(), kind)).or_default() += 1;
    }
}

/// A small seeded generator (splitmix64): enough for fault decisions, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for `label` derived from `seed` (FNV-1a of the label mixed in).
    pub fn for_label(seed: u64, label: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Rng(seed ^ h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u32) -> bool {
        self.next_u64() % 100 < percent as u64
    }
}

/// What an injector does with the calls of its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Faults at the plan's rate and mix.
    Random,
    /// Calls number `from` and later (0-based, counted per client) fail on every attempt with `kind`,
    /// as if the process lost DynamoDB at that step; earlier calls pass.
    FailFrom {
        from: u64,
        kind: FaultKind,
    },
    /// Every call of operation `op` (its SDK name, such as `PutItem`) fails on every attempt with `kind`;
    /// other calls pass.
    FailOp {
        op: &'static str,
        kind: FaultKind,
    },
    /// Every attempt whose request body contains one of the needles (such as an attribute name only one
    /// kind of write sets) fails with that needle's kind (the first that matches); other calls pass.
    FailWhere(&'static [(&'static str, FaultKind)]),
    /// As [`Mode::FailWhere`], on the first attempt of a call only: the SDK's retry goes through.
    FailFirstWhere(&'static [(&'static str, FaultKind)]),
    Off,
}

/// The fault decided for one execution, kept in its config bag.
#[derive(Debug, Clone)]
struct Decision {
    op: String,
    kind: Option<FaultKind>,
    /// Attempts to fault (1: the SDK's retry absorbs it; u32::MAX: every attempt).
    attempts_to_fault: u32,
    attempt: u32,
    /// Whether the current attempt is faulted (set before transmit, read after).
    current: Option<FaultKind>,
}

impl Storable for Decision {
    type Storer = StoreReplace<Self>;
}

/// The interceptor: one per client, decisions from its own seeded generator.
pub struct Injector {
    faults: Arc<Faults>,
    rng: Mutex<Rng>,
    mode: Mutex<Mode>,
    executions: AtomicU64,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl Injector {
    pub fn new(faults: Arc<Faults>, label: &str, mode: Mode) -> Arc<Self> {
        let rng = Rng::for_label(faults.plan.seed, label);
        Arc::new(Injector { faults, rng: Mutex::new(rng), mode: Mutex::new(mode), executions: AtomicU64::new(0) })
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        self.executions.store(0, Ordering::SeqCst);
    }

    /// Calls made by this client since the last [`Injector::set_mode`].
    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::SeqCst)
    }

    fn decide(&self, op: String) -> Decision {
        let n = self.executions.fetch_add(1, Ordering::SeqCst);
        let none = Decision { op: op.clone(), kind: None, attempts_to_fault: 0, attempt: 0, current: None };
        if !self.faults.enabled.load(Ordering::SeqCst) {
            return none;
        }
        match *self.mode.lock().unwrap() {
            Mode::Off => none,
            Mode::FailFrom { from, kind } if n >= from => {
                Decision { op, kind: Some(kind), attempts_to_fault: u32::MAX, attempt: 0, current: None }
            }
            Mode::FailFrom { .. } => none,
            Mode::FailOp { op: failing, kind } if failing == op => {
                Decision { op, kind: Some(kind), attempts_to_fault: u32::MAX, attempt: 0, current: None }
            }
            Mode::FailOp { .. } | Mode::FailWhere(_) | Mode::FailFirstWhere(_) => none,
            Mode::Random => {
                let plan = &self.faults.plan;
                let mut rng = self.rng.lock().unwrap();
                if rng.next_u64() % 1_000_000 >= plan.rate_ppm as u64 {
                    return none;
                }
                let total: u64 = plan.weights.iter().map(|w| *w as u64).sum();
                let mut pick = rng.next_u64() % total.max(1);
                let mut kind = FaultKind::Throttle;
                for (k, w) in FaultKind::ALL.iter().zip(plan.weights) {
                    if pick < w as u64 {
                        kind = *k;
                        break;
                    }
                    pick -= w as u64;
                }
                let persistent = rng.percent(plan.persistent_percent);
                Decision {
                    op,
                    kind: Some(kind),
                    attempts_to_fault: if persistent { u32::MAX } else { 1 },
                    attempt: 0,
                    current: None,
                }
            }
        }
    }
}

/// The JSON error body DynamoDB sends (`__type` is what the SDK reads the error code from).
pub fn error_body(code: &str, message: &str) -> String {
    let namespace = if code == "ThrottlingException" {
        "com.amazon.coral.availability"
    } else {
        "com.amazonaws.dynamodb.v20120810"
    };
    serde_json::json!({"__type": format!("{namespace}#{code}"), "message": message}).to_string()
}

impl Intercept for Injector {
    fn name(&self) -> &'static str {
        "ZaqarFaultInjector"
    }

    // Once per execution, after the operation's configuration (its name) is in the bag.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg.load::<Metadata>().map(|m| m.name().to_string()).unwrap_or_else(|| "unknown".into());
        let decision = self.decide(op);
        self.faults.executions.fetch_add(1, Ordering::Relaxed);
        if decision.kind.is_some() {
            self.faults.faulted_executions.fetch_add(1, Ordering::Relaxed);
        }
        cfg.interceptor_state().store_put(decision);
        Ok(())
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.faults.attempts.fetch_add(1, Ordering::Relaxed);
        let Some(mut d) = cfg.load::<Decision>().cloned() else { return Ok(()) };
        d.current = None;
        // FailWhere decides per attempt, from the mode as it is now: a retry made after the mode changed
        // goes through.
        let mut kind = d.kind.filter(|_| d.attempt < d.attempts_to_fault);
        let (needles, first_only) = match *self.mode.lock().unwrap() {
            Mode::FailWhere(needles) => (Some(needles), false),
            Mode::FailFirstWhere(needles) => (Some(needles), true),
            _ => (None, false),
        };
        if let Some(needles) = needles {
            let body = context.request().body().bytes().unwrap_or_default();
            let found = needles.iter().find(|(n, _)| body.windows(n.len()).any(|w| w == n.as_bytes()));
            kind = found.map(|(_, k)| *k).filter(|_| !first_only || d.attempt == 0);
        }
        if let Some(kind) = kind {
            // Faults stop when the switch goes off, so quiescence really is quiet.
            if self.faults.enabled.load(Ordering::SeqCst) {
                d.current = Some(kind);
                self.faults.count(&d.op, kind);
                if kind != FaultKind::ServerErrorAfter {
                    context.request_mut().headers_mut().insert(FAULT_HEADER, kind.name());
                }
            }
        }
        d.attempt += 1;
        cfg.interceptor_state().store_put(d);
        Ok(())
    }

    // Counts failed attempts that were not injected, so a report tells injected faults from real ones.
    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Decision>().and_then(|d| d.current).is_some() {
            return Ok(());
        }
        let cause = match (context.response(), context.output_or_error()) {
            (Some(resp), _) if resp.status().as_u16() >= 400 => {
                let code = resp
                    .body()
                    .bytes()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                    .and_then(|v| v["__type"].as_str().map(|t| t.rsplit('#').next().unwrap_or(t).to_string()));
                // Failed conditions are answers, not faults.
                if code.as_deref() == Some("ConditionalCheckFailedException") {
                    return Ok(());
                }
                format!("HTTP {} {}", resp.status().as_u16(), code.unwrap_or_default())
            }
            (_, Some(Err(e))) if e.is_timeout_error() => "timeout".to_string(),
            (_, Some(Err(e))) if e.is_connector_error() => "connection".to_string(),
            (_, Some(Err(_))) => "other".to_string(),
            _ => return Ok(()),
        };
        let op = cfg.load::<Metadata>().map(|m| m.name().to_string()).unwrap_or_default();
        *self.faults.natural.lock().unwrap().entry(format!("{op}/{cause}")).or_default() += 1;
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let faulted = cfg.load::<Decision>().and_then(|d| d.current);
        if faulted == Some(FaultKind::ServerErrorAfter) {
            // DynamoDB applied the request; its answer is dropped (the connection is not reused).
            let body = error_body("InternalServerError", "Internal server error (injected after the write)");
            let mut resp = aws_sdk_dynamodb::config::http::HttpResponse::new(
                500u16.try_into().expect("valid status"),
                SdkBody::from(body),
            );
            resp.headers_mut().insert("content-type", "application/x-amz-json-1.0");
            *context.response_mut() = resp;
        }
        Ok(())
    }
}

/// Storage deadlines and retries of faulted clients: the service's own ([`StorageTimeouts`]: its retry
/// strategy, backoff and attempt count) with a longer attempt and operation deadline. On a loaded
/// 2-core machine DynamoDB Local alone can take over the production 2 s, and a timeout the injector
/// did not cause would blur the report (such failures are counted apart as "not injected").
pub fn storage_timeouts() -> StorageTimeouts {
    StorageTimeouts { attempt: ATTEMPT_TIMEOUT, operation: Duration::from_secs(10), ..StorageTimeouts::default() }
}

/// How long one attempt may take in faulted clients; stalls last longer than this.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(2500);

/// An app whose DynamoDB client goes through the proxy at `proxy_url` with `injector` installed. The
/// table must exist (create it with a plain [`crate::app_with`] first).
pub async fn faulty_app(config: Config, proxy_url: &str, injector: Arc<Injector>) -> App {
    let sdk = zaqar::app::sdk_loader()
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "tests"))
        .load()
        .await;
    let conf = aws_sdk_dynamodb::config::Builder::from(&storage_timeouts().apply(&sdk))
        .endpoint_url(proxy_url)
        .interceptor(SharedInjector(injector))
        .build();
    App::new(config, aws_sdk_dynamodb::Client::from_conf(conf), Clock::manual())
}

/// `Intercept` for a shared injector, so a test keeps a handle to switch its mode.
#[derive(Debug, Clone)]
struct SharedInjector(Arc<Injector>);

impl Intercept for SharedInjector {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.read_before_serialization(context, components, cfg)
    }
    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.modify_before_transmit(context, components, cfg)
    }
    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.modify_before_deserialization(context, components, cfg)
    }
    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.read_after_attempt(context, components, cfg)
    }
}

/// Time a client spent waiting for DynamoDB (the union of its calls in flight), so a test can tell a
/// handler that waits on purpose (a stalled queue) from a slow DynamoDB Local on a loaded machine.
#[derive(Debug, Default)]
pub struct Meter {
    state: Mutex<MeterState>,
}

#[derive(Debug, Default)]
struct MeterState {
    in_flight: u32,
    since: Option<std::time::Instant>,
    busy: Duration,
}

impl Meter {
    /// Time with at least one DynamoDB call in flight, so far.
    pub fn busy(&self) -> Duration {
        let st = self.state.lock().unwrap();
        st.busy + st.since.map(|s| s.elapsed()).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
struct SharedMeter(Arc<Meter>);

impl Intercept for SharedMeter {
    fn name(&self) -> &'static str {
        "ZaqarDynamoDbMeter"
    }

    // Whole executions (retries and their backoff included): only the handler's own waiting is left out.
    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut st = self.0.state.lock().unwrap();
        if st.in_flight == 0 {
            st.since = Some(std::time::Instant::now());
        }
        st.in_flight += 1;
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut st = self.0.state.lock().unwrap();
        st.in_flight = st.in_flight.saturating_sub(1);
        if st.in_flight == 0 {
            if let Some(since) = st.since.take() {
                st.busy += since.elapsed();
            }
        }
        Ok(())
    }
}

/// A fault-free app straight to `endpoint` (the harness's deadlines) whose DynamoDB time is measured.
pub async fn metered_app(config: Config, endpoint: &str) -> (App, Arc<Meter>) {
    let sdk = crate::local_sdk(endpoint).load().await;
    let meter = Arc::new(Meter::default());
    let conf = aws_sdk_dynamodb::config::Builder::from(&crate::test_timeouts().apply(&sdk))
        .interceptor(SharedMeter(meter.clone()))
        .build();
    (App::new(config, aws_sdk_dynamodb::Client::from_conf(conf), Clock::manual()), meter)
}
