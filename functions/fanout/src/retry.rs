//! Zaqar's webhook retry policy (docs/api.md#subscriptions-retry-policy): which policy applies and the delays it
//! prescribes.

use serde_json::{Map, Value};
use std::time::Duration;

const RETRIES_WITH_NO_DELAY: i64 = 3;
const MINIMUM_DELAY_RETRIES: i64 = 3;
const MINIMUM_DELAY: i64 = 5;
const MAXIMUM_DELAY: i64 = 30;
const MAXIMUM_DELAY_RETRIES: i64 = 3;
const LINEAR_INTERVAL: i64 = 5;
/// No policy may ask for more attempts than this (the delays are bounded by the time budget anyway).
const MAX_STEPS: usize = 200;

fn object(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

fn truthy(m: &Map<String, Value>, key: &str) -> bool {
    m.get(key).is_some_and(|v| !zaqar::meta::is_falsy(v))
}

/// The policy in force: the subscription's, unless either side sets `ignore_subscription_override`.
pub fn effective(subscription_options: &Value, queue_meta: Option<&Map<String, Value>>) -> Map<String, Value> {
    let sub = object(subscription_options.get("_retry_policy"));
    let queue = object(queue_meta.and_then(|m| m.get("_retry_policy")));
    if truthy(&sub, "ignore_subscription_override") || truthy(&queue, "ignore_subscription_override") {
        queue
    } else if !sub.is_empty() {
        sub
    } else {
        queue
    }
}

/// A policy number within the bounds the API enforces (policies stored before they were enforced may
/// hold anything).
fn int(policy: &Map<String, Value>, key: &str, default: i64) -> i64 {
    match policy.get(key) {
        None => default,
        Some(Value::Bool(b)) => *b as i64,
        Some(v) => v.as_i64().unwrap_or(default).clamp(0, zaqar::meta::RETRY_POLICY_MAX),
    }
}

/// Delays before each retry, in order: immediate retries, retries after `minimum_delay`, the backoff
/// series from `minimum_delay` to `maximum_delay`, then retries after `maximum_delay`.
pub fn schedule(policy: &Map<String, Value>) -> Vec<Duration> {
    let no_delay = int(policy, "retries_with_no_delay", RETRIES_WITH_NO_DELAY);
    let min_retries = int(policy, "minimum_delay_retries", MINIMUM_DELAY_RETRIES);
    let min = int(policy, "minimum_delay", MINIMUM_DELAY);
    let max = int(policy, "maximum_delay", MAXIMUM_DELAY);
    let max_retries = int(policy, "maximum_delay_retries", MAXIMUM_DELAY_RETRIES);
    let function = policy.get("retry_backoff_function").and_then(Value::as_str).unwrap_or("linear");
    let mut delays: Vec<i64> = Vec::new();
    delays.extend(std::iter::repeat_n(0, no_delay.min(MAX_STEPS as i64) as usize));
    delays.extend(std::iter::repeat_n(min, min_retries.min(MAX_STEPS as i64) as usize));
    delays.extend(backoff(function, min, max));
    delays.extend(std::iter::repeat_n(max, max_retries.min(MAX_STEPS as i64) as usize));
    delays.truncate(MAX_STEPS);
    delays.into_iter().map(|s| Duration::from_secs(s.max(0) as u64)).collect()
}

/// Zaqar's backoff functions (`notification/tasks/webhook.py`), in 5-second steps.
fn backoff(function: &str, min: i64, max: i64) -> Vec<i64> {
    let linear = || (min..max).step_by(LINEAR_INTERVAL as usize).take(MAX_STEPS).collect::<Vec<_>>();
    let x_max = (max - min) / LINEAR_INTERVAL;
    // The curved series divide by (x_max - 1) and by min: fall back to linear where Python would fail.
    if function == "linear" || x_max < 2 || min <= 0 || x_max as usize > MAX_STEPS {
        return linear();
    }
    let (minf, maxf) = (min as f64, max as f64);
    let k = 10f64.powf((maxf / minf).log10() / (x_max - 1) as f64);
    (1..=x_max)
        .map(|a| {
            let a = a as f64;
            match function {
                "geometric" => (minf * k.powf(a - 1.0)) as i64,
                "exponential" => ((minf / k) * k.powf(a)) as i64,
                "arithmetic" => {
                    let d = 2.0 * (maxf - minf) / (x_max * (x_max - 1)) as f64;
                    (minf + (a - 1.0) * a * d / 2.0) as i64
                }
                _ => minf as i64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(v: &[Duration]) -> Vec<u64> {
        v.iter().map(Duration::as_secs).collect()
    }

    #[test]
    fn default_schedule_matches_zaqar() {
        assert_eq!(secs(&schedule(&Map::new())), vec![0, 0, 0, 5, 5, 5, 5, 10, 15, 20, 25, 30, 30, 30]);
    }

    #[test]
    fn backoff_functions() {
        assert_eq!(backoff("linear", 5, 30), vec![5, 10, 15, 20, 25]);
        assert_eq!(backoff("geometric", 5, 30), vec![5, 7, 12, 19, 30]);
        assert_eq!(backoff("exponential", 5, 30), vec![5, 7, 12, 19, 30]);
        assert_eq!(backoff("arithmetic", 5, 30), vec![5, 7, 12, 20, 30]);
    }

    #[test]
    fn policy_selection() {
        let sub = json!({"_retry_policy": {"retries_with_no_delay": 1}});
        let queue = json!({"_retry_policy": {"retries_with_no_delay": 2}});
        let queue = queue.as_object().unwrap();
        assert_eq!(effective(&sub, Some(queue))["retries_with_no_delay"], json!(1));
        assert_eq!(effective(&json!({}), Some(queue))["retries_with_no_delay"], json!(2));
        let ignoring = json!({"_retry_policy": {"retries_with_no_delay": 2, "ignore_subscription_override": true}});
        assert_eq!(effective(&sub, ignoring.as_object())["retries_with_no_delay"], json!(2));
        let p = json!({"retries_with_no_delay": 2, "minimum_delay_retries": 0, "maximum_delay_retries": 0, "minimum_delay": 5, "maximum_delay": 5});
        assert_eq!(secs(&schedule(p.as_object().unwrap())), vec![0, 0]);
    }

    #[test]
    fn extreme_stored_policies_stay_bounded() {
        for function in ["linear", "geometric", "exponential", "arithmetic"] {
            let p = json!({"minimum_delay": i64::MIN, "maximum_delay": i64::MAX, "retries_with_no_delay": i64::MAX,
                "minimum_delay_retries": i64::MAX, "maximum_delay_retries": -1, "retry_backoff_function": function});
            let delays = schedule(p.as_object().unwrap());
            assert_eq!(delays.len(), MAX_STEPS, "{function}");
            assert!(delays.iter().all(|d| d.as_secs() <= zaqar::meta::RETRY_POLICY_MAX as u64), "{function}");
        }
    }
}
